"""One micro-batch of ``clm.events.v1``, applied inside the consumer's transaction.

1. decode (poison → DLQ), drop repeats of an event id and events of erased customers that
   happened before their erasure (nothing of them is stored, not even a dedupe row), and
   events applied before: an applied event's claim is its row in the customer's event log
   (``customer_events``), and only events without one (no customer, or failed) are claimed in
   ``processed_events``; the claims are written with the batch, and one that finds its key
   taken (a concurrent transaction got there first) rolls the batch back for a retry;
2. resolve identities: an event carrying both ids links the anonymous id to the customer;
   an anonymous-only event lands on its linked customer, if any;
3. take the customers' rows this process wrote last from memory (:mod:`known`) and read the
   others (with a merge, read and lock them all); rebuild the customers with late events or
   merges from their stored events, fold the rest incrementally (pure :mod:`processor`);
4. write rows, the event log, links, history, outbox records and webhook deliveries; each
   customer row only if still at the version the batch started from (else the batch is
   retried: :class:`~clm_stage_engine.repository.StaleRows`).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_domain.events import Event, parse_event_json
from clm_domain.lifecycle import customer_key, event_order
from clm_domain.pseudonyms import DEV_PSEUDONYM_KEY, Pseudonyms
from clm_domain.rules import LifecycleRules
from clm_infra.consumer import BatchResult, Poison
from clm_stage_engine import repository
from clm_stage_engine.known import KnownStates
from clm_stage_engine.processor import FoldResult, Item, first_of_each, fold, needs_history
from clm_stage_engine.records import removal_record
from clm_stage_engine.relay import PayloadCache
from clm_stage_engine.webhooks import stage_change_deliveries

log = logging.getLogger(__name__)

EVENTS = Counter("clm_events_processed_total", "Events applied by the stage engine", ["type"])
DUPLICATES = Counter("clm_events_duplicate_total", "Events already applied, skipped")
ERASED = Counter("clm_events_erased_total", "Events of erased customers, dropped")
MERGES = Counter("clm_identity_merges_total", "Anonymous profiles merged into customers")
TRANSITIONS = Counter(
    "clm_stage_transitions_total", "Stage moves recorded", ["from_stage", "to_stage"]
)
PHASE_SECONDS = Counter(
    "clm_stage_engine_phase_seconds_total",
    "Time the stage engine spent per phase of its batches (where a batch's time goes)",
    ["phase"],
)


class _Phases:
    """Per-batch phase timer: ``lap("decode")`` books the time since the previous lap."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        PHASE_SECONDS.labels(phase).inc(now - self._last)
        self._last = now


def decode(record: Any) -> Event:
    if record.value is None:
        raise ValueError("empty record value")
    return parse_event_json(record.value)


class EventsHandler:
    """Decode, dedupe, resolve, fold and write one batch; poison comes back for the DLQ."""

    def __init__(
        self,
        lifecycle_topic: str,
        rules: LifecycleRules,
        known: KnownStates | None = None,
        outbox: PayloadCache | None = None,
        pseudonyms: Pseudonyms | None = None,
    ) -> None:
        self.lifecycle_topic = lifecycle_topic
        # how an erased customer is remembered: never its id, only its keyed hash (the app
        # passes CLM_PSEUDONYM_KEY's; tests that drive the handler directly get the dev key)
        self.pseudonyms = pseudonyms if pseudonyms is not None else Pseudonyms(DEV_PSEUDONYM_KEY)
        self.rules = rules
        # rows this process wrote, filled only through BatchResult.committed (a caller that
        # does not call it, as the tests that drive the handler directly, reads every row)
        self.known = known if known is not None else KnownStates(0)
        self.outbox = outbox if outbox is not None else PayloadCache(0)  # the relay's

    async def __call__(self, conn: AsyncConnection, records: Sequence[Any]) -> BatchResult:
        wanted: set[str] = set()
        try:
            return await self._apply(conn, records, wanted)
        except BaseException:
            self.known.forget(wanted)  # what it took from memory may be what went stale
            raise

    async def _apply(
        self, conn: AsyncConnection, records: Sequence[Any], wanted: set[str]
    ) -> BatchResult:
        now = datetime.now(UTC)
        phases = _Phases()
        poison: list[Poison] = []
        decoded: list[tuple[Any, Event]] = []
        for record in records:
            try:
                decoded.append((record, decode(record)))
            except (ValidationError, ValueError) as exc:
                poison.append(Poison(record, f"undecodable: {_short(exc)}"))
        unique = first_of_each(decoded)
        DUPLICATES.inc(len(decoded) - len(unique))
        decoded = unique
        phases.lap("decode")

        ids = {i for _, e in decoded for i in (e.customer_id, e.anonymous_id) if i is not None}
        found = await repository.lookup_batch(
            conn,
            [(e.source, e.event_id) for _, e in decoded],
            [self.pseudonyms.tombstone(i) for i in ids],
            list(ids),
        )
        decoded = self._drop_erased(found.erased, decoded)
        new = [(r, e) for r, e in decoded if (e.source, e.event_id) not in found.applied]
        DUPLICATES.inc(len(decoded) - len(new))
        phases.lap("dedupe")

        links = found.links
        new_links: dict[str, tuple[str, str]] = {}
        linking = [e for _, e in new if e.anonymous_id and e.customer_id]  # few: sort only them
        for e in sorted(linking, key=event_order):
            anon, cid = e.anonymous_id, e.customer_id
            if anon and cid and anon != cid and anon not in links and anon not in new_links:
                new_links[anon] = (links.get(cid, cid), e.event_id)

        def resolve(e: Event) -> str | None:
            """The customer an event lands on: its own id unless merged or linked away."""
            key = customer_key(e)
            if key is None:
                return None
            if e.customer_id:
                return links.get(key, key)  # a customer merged into another
            return links.get(key) or new_links.get(key, (key, ""))[0]

        items = [Item.of(r, e, resolve(e), r.value) for r, e in new]
        phases.lap("identities")

        keys = {i.key for i in items if i.key is not None}
        wanted.update(keys, new_links)
        if new_links:  # a merge deletes profiles: read and lock every row this batch writes
            rows = await repository.read_customers(conn, wanted, lock=True)
        else:
            rows = self.known.take(wanted)
            rows.update(await repository.read_customers(conn, wanted - rows.keys()))
        loaded = {key: row.state for key, row in rows.items()}
        merges: dict[str, list[str]] = {}
        for anon, (cid, _) in new_links.items():
            if anon in loaded and cid in keys:
                merges.setdefault(cid, []).append(anon)
        rebuild = needs_history(items, loaded, merges)
        stored = await repository.load_events(
            conn, sorted(rebuild | {a for anons in merges.values() for a in anons})
        )
        histories = {  # per customer, its events and those of each profile merged into it
            key: [stored.get(key, []), *(stored.get(anon, []) for anon in merges.get(key, []))]
            for key in rebuild
        }
        phases.lap("load")
        result = fold(
            items,
            {k: v for k, v in loaded.items() if k in keys},
            self.rules,
            now=now,
            histories=histories,
            merges=merges,
            merged_states={a: loaded[a] for anons in merges.values() for a in anons},
        )
        poison.extend(Poison(record, reason) for record, reason in result.failed)
        phases.lap("fold")
        versions = {key: row.version for key, row in rows.items()}
        xid, queued = await self._write(
            conn, items, result, loaded, versions, merges, new_links, found.subscriptions
        )
        phases.lap("write")

        def committed() -> None:
            self.known.remember(result.states, xid)
            if queued is not None:
                self.outbox.put(*queued)

        return BatchResult(poison=poison, applied=len(result.applied), committed=committed)

    def _drop_erased(
        self, erased: dict[str, datetime], pairs: list[tuple[Any, Event]]
    ) -> list[tuple[Any, Event]]:
        """Events of an erased customer (either id) from before the erasure are dropped."""
        if not erased:
            return pairs
        kept = []
        for record, event in pairs:
            times = [
                erased.get(self.pseudonyms.tombstone(i))
                for i in (event.customer_id, event.anonymous_id)
                if i is not None
            ]
            if any(t is not None and event.occurred_at <= t for t in times):
                ERASED.inc()
                continue
            kept.append((record, event))
        return kept

    async def _write(
        self,
        conn: AsyncConnection,
        items: Sequence[Item[Any]],
        result: FoldResult[Any],
        loaded: dict[str, Any],
        versions: dict[str, int],
        merges: dict[str, list[str]],
        new_links: dict[str, tuple[str, str]],
        subscriptions: list[tuple[int, list[str] | None]],
    ) -> tuple[int, tuple[int, bytes] | None]:
        """Write the batch; return the writing transaction's id and the outbox row's id and
        payload (None: no records). Every customer row goes back only if still at the
        version read (``versions``; none: it had no row).

        Every new event is claimed once: an applied customer event by its
        event-log row, an event without a customer or one that failed by a
        ``processed_events`` row. A claim that finds its key taken means a concurrent
        transaction applied the event after this batch's dedupe read: roll back, and the
        retry sees it as a duplicate."""
        logged = [
            (i.event.source, i.event.event_id, i.key, i.event.occurred_at, i.wire)
            for i in result.applied
            if i.key is not None
        ]
        failed = {id(tag) for tag, _ in result.failed}
        claims = [
            (i.event.source, i.event.event_id, customer_key(i.event))
            for i in items
            if i.key is None or id(i.tag) in failed
        ]
        outbox = list(result.outbox)
        for cid, anons in sorted(merges.items()):
            await repository.absorb_profiles(conn, cid, anons)
            for anon in anons:
                MERGES.inc()
                log.info("identity merge", extra={"anonymous_id": anon, "customer_id": cid})
                outbox.append(
                    (
                        cid,
                        removal_record(
                            "identity_merge",
                            f"{anon}>{cid}",
                            anon,
                            loaded[anon].stage.value,
                            merged_into=cid,
                            restated=True,  # the rebuild's restatement takes it back
                        ),
                    )
                )
        xid = await repository.write_batch(
            conn,
            events=logged,
            claims=claims,
            links=[(anon, cid, eid) for anon, (cid, eid) in sorted(new_links.items())],
            states=[(state, versions.get(key)) for key, state in result.states.items()],
            transitions=result.transitions,
        )
        queued = await repository.insert_outbox(conn, self.lifecycle_topic, outbox)
        await self._enqueue_webhooks(conn, result, subscriptions)
        for event_type, n in collections.Counter(i.event.type for i in result.applied).items():
            EVENTS.labels(event_type).inc(n)
        moves = collections.Counter(
            (t.from_stage or "none", t.to_stage) for t in result.transitions
        )
        for (from_stage, to_stage), n in moves.items():
            TRANSITIONS.labels(from_stage, to_stage).inc(n)
        return xid, queued

    async def _enqueue_webhooks(
        self,
        conn: AsyncConnection,
        result: FoldResult[Any],
        subscriptions: list[tuple[int, list[str] | None]],
    ) -> None:
        rows = stage_change_deliveries(result.transitions, subscriptions)
        await repository.enqueue_deliveries(conn, rows)


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
    return str(exc)[:500]
