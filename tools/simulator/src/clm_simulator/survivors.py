"""The surviving events of a history with identity merges, explicit merges and erasures, and
the customer each one counts for (``clm.lifecycle.v2``'s truth; see :func:`replay_surviving`).

A history is what happened, in order: batches of event documents as they arrived, explicit
merges (``POST /v1/customers/{into}/merge`` with ``from``) and erasures
(``DELETE /v1/customers/{id}``, mode ``erase``). As the stage engine does:

- an event carrying both ids links its anonymous id to its customer (the first link of an
  anonymous id wins: in arrival order, by event time within a batch); an anonymous-only
  event counts for the customer its id is linked to, now or later, as if the identity had
  been known from the start;
- an explicit merge links ``from`` to ``into``: every event of ``from`` (and of the ids
  linked to it) counts for ``into``;
- an erasure takes back every event of the customer and of the ids linked to it, and drops
  those that come later (the engine drops events dated before the erasure: a history dated
  in the past has only such);
- an anonymisation keeps those events, counted for the customer's pseudonym; its ids are no
  longer linked, so their later events start new profiles;
- an event id seen before (per source) counts once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clm_domain.events import Event, parse_event
from clm_domain.lifecycle import customer_key, event_order
from clm_domain.rules import LifecycleRules
from clm_simulator.replay import RULES, Step, replay


@dataclass(frozen=True, slots=True)
class Merge:
    """An explicit merge: ``source`` (the request's ``from``) folds into ``into``."""

    into: str
    source: str


@dataclass(frozen=True, slots=True)
class Erase:
    """An erasure (mode ``erase``) of a customer."""

    customer_id: str


@dataclass(frozen=True, slots=True)
class Anonymise:
    """An erasure in mode ``anonymise``: the customer's events so far count for
    ``pseudonym``, its links are dropped (later events of its ids start afresh)."""

    customer_id: str
    pseudonym: str


#: One step of a history: a batch of event documents as they arrived, a merge, an erasure.
Operation = Sequence[dict[str, Any]] | Merge | Erase | Anonymise
Ident = tuple[str, str]  # (source, event_id)


@dataclass(slots=True)
class Survivors:
    """The surviving events (documents, in arrival order) and whose each one is."""

    kept: list[tuple[Ident, dict[str, Any]]] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)  # id → the id it was folded into
    erased: set[str] = field(default_factory=set)
    _landed: dict[Ident, str | None] = field(default_factory=dict)

    @property
    def docs(self) -> list[dict[str, Any]]:
        return [doc for _, doc in self.kept]

    def owner(self, key: str) -> str:
        """The customer an id's events count for: its links followed to the end."""
        seen = {key}
        while key in self.links:
            key = self.links[key]
            if key in seen:  # a cycle cannot be built through merges; stop rather than loop
                break
            seen.add(key)
        return key

    def key_of(self, event: Event) -> str | None:
        """The customer ``event`` counts for (None: marketing spend)."""
        landed = self._landed.get((event.source, event.event_id), customer_key(event))
        return None if landed is None else self.owner(landed)

    def arrive(self, docs: Sequence[dict[str, Any]], now: datetime) -> None:
        events = [(doc, parse_event(doc, now=now)) for doc in docs]
        fresh = []
        for doc, event in events:
            ident = (event.source, event.event_id)
            ids = {i for i in (event.customer_id, event.anonymous_id) if i is not None}
            if ident in self._landed or ids & self.erased:
                continue
            self._landed[ident] = customer_key(event)
            fresh.append((doc, event))
        for _, event in sorted(fresh, key=lambda pair: event_order(pair[1])):
            anon, cid = event.anonymous_id, event.customer_id
            if anon and cid and anon != cid and anon not in self.links:
                self.links[anon] = cid
        self.kept.extend(((e.source, e.event_id), doc) for doc, e in fresh)

    def merge(self, op: Merge) -> None:
        if self.owner(op.source) != self.owner(op.into):
            self.links[op.source] = op.into

    def erase(self, op: Erase) -> None:
        known = {op.customer_id, *self.links, *(k for k in self._landed.values() if k)}
        gone = {i for i in known if self.owner(i) == op.customer_id}
        self.erased |= gone
        kept = []
        for ident, doc in self.kept:
            landed = self._landed[ident]
            if landed is not None and landed in gone:
                del self._landed[ident]
            else:
                kept.append((ident, doc))
        self.kept = kept
        for i in gone:
            self.links.pop(i, None)

    def anonymise(self, op: Anonymise) -> None:
        for ident, landed in self._landed.items():
            if landed is not None and self.owner(landed) == op.customer_id:
                self._landed[ident] = op.pseudonym
        for i in [i for i in self.links if self.owner(i) == op.customer_id]:
            del self.links[i]


def surviving(history: Sequence[Operation], *, now: datetime) -> Survivors:
    """Play ``history``: the events that survive it and whose each one is."""
    out = Survivors()
    for op in history:
        if isinstance(op, Merge):
            out.merge(op)
        elif isinstance(op, Erase):
            out.erase(op)
        elif isinstance(op, Anonymise):
            out.anonymise(op)
        else:
            out.arrive(op, now)
    return out


def replay_surviving(
    history: Sequence[Operation], *, now: datetime, rules: LifecycleRules = RULES
) -> list[Step]:
    """The steps of the surviving events, each counted for its customer (see
    :func:`~clm_simulator.replay.replay`; then ``sweeps``, ``truth`` … as usual)."""
    survivors = surviving(history, now=now)
    return replay(survivors.docs, now=now, rules=rules, keys=survivors.key_of)
