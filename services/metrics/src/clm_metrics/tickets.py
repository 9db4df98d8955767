"""Open support tickets, counted per ticket (pure).

A ticket, keyed by ``(customer, ticket id)``, is open from its first ``opened`` event until its
first ``solved`` one (by event time). A solve with no known open closes nothing (the ticket was
opened before it was tracked), a solve dated at or before the first open means the ticket was
never open, and a repeated open or solve changes nothing. Each ticket contributes to the
``tickets_open`` level metric: +1 in the minute it opened and -1 in the minute it was solved
(same source and channel, those of its first open), so summing ``tickets_open`` up to an
instant gives the tickets open then, and each ticket adds 0 or 1: never below zero.

When a ticket's state changes (a late earlier open, a solve, a merge, an erasure), its old
contribution is taken back and its new one added, at their own minutes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from clm_metrics.buckets import BucketKey, floor_minute
from clm_metrics.members import Leaving, customer_id_of

LEVEL = "tickets_open"
TicketKey = tuple[str, str]  # (customer id, ticket id)


@dataclass(frozen=True, slots=True)
class TicketState:
    """What is known of one ticket: its first open (with that event's source and channel) and
    its first solve."""

    opened_at: datetime | None = None
    solved_at: datetime | None = None
    source: str = ""
    channel: str = ""


@dataclass(frozen=True, slots=True)
class TicketEvent:
    key: TicketKey
    status: str  # "opened" or "solved"
    at: datetime
    source: str
    channel: str


def ticket_event(record: Mapping[str, Any]) -> TicketEvent | None:
    """The ticket event a ``clm.lifecycle.v1`` record carries (None for any other record)."""
    event = record.get("event")
    if event is None or record.get("kind") == "correction" or event["type"] != "support_ticket":
        return None
    who = customer_id_of(record)
    if who is None:
        return None
    props = event.get("properties") or {}
    at = event["occurred_at"]
    return TicketEvent(
        (who, str(props["ticket_id"])),
        "opened" if props["status"] == "opened" else "solved",
        at if isinstance(at, datetime) else datetime.fromisoformat(str(at)),
        str(event.get("source") or ""),
        str(event.get("channel") or ""),
    )


def is_open(state: TicketState | None, at: datetime) -> bool:
    """Whether the ticket is open at the end of a window ending at ``at``: opened before it
    and not solved before it."""
    if state is None or state.opened_at is None or state.opened_at >= at:
        return False
    return state.solved_at is None or state.solved_at >= at


def contribution(state: TicketState | None) -> list[tuple[BucketKey, Decimal]]:
    """What one ticket adds to the ``tickets_open`` level buckets."""
    if state is None or state.opened_at is None:
        return []
    if state.solved_at is not None and state.solved_at <= state.opened_at:
        return []  # solved before (or as) it opened: never open
    src, ch = state.source, state.channel
    out = [(BucketKey(floor_minute(state.opened_at), LEVEL, src, ch, ""), Decimal(1))]
    if state.solved_at is not None:
        out.append((BucketKey(floor_minute(state.solved_at), LEVEL, src, ch, ""), Decimal(-1)))
    return out


def applied(state: TicketState | None, event: TicketEvent) -> TicketState:
    """The state after one event: the earliest open and the earliest solve win."""
    state = state if state is not None else TicketState()
    if event.status == "opened":
        if state.opened_at is None or event.at < state.opened_at:
            return replace(state, opened_at=event.at, source=event.source, channel=event.channel)
        return state
    if state.solved_at is None or event.at < state.solved_at:
        return replace(state, solved_at=event.at)
    return state


def merged(a: TicketState | None, b: TicketState) -> TicketState:
    """One ticket known under two profiles (a merge): earliest open and earliest solve."""
    if a is None:
        return b
    first = (
        a if b.opened_at is None or (a.opened_at is not None and a.opened_at <= b.opened_at) else b
    )
    solves = [s for s in (a.solved_at, b.solved_at) if s is not None]
    return replace(first, solved_at=min(solves) if solves else None)


@dataclass(frozen=True, slots=True)
class TicketChanges:
    """States to write (``None``: delete the row) and the level increments they make."""

    states: dict[TicketKey, TicketState | None]
    increments: list[tuple[BucketKey, Decimal]]


def advance(
    known: Mapping[TicketKey, TicketState],
    steps: Iterable[TicketEvent | Leaving],
) -> TicketChanges:
    """A batch's ticket events and leaving profiles, in record order, over the ``known`` states
    (every row of the tickets and profiles they name): the states that changed and the level
    increments (each changed ticket's old contribution taken back, its new one added).

    A merged profile's tickets move to the survivor (merged with its own); an erased profile's
    tickets are dropped (their level taken back); an anonymised profile's move to its
    pseudonym."""
    now: dict[TicketKey, TicketState | None] = dict(known)
    for step in steps:
        if isinstance(step, TicketEvent):
            now[step.key] = applied(now.get(step.key), step)
            continue
        for key in [k for k, s in now.items() if k[0] == step.who and s is not None]:
            state = now[key]
            assert state is not None
            now[key] = None
            target = step.into if step.into is not None else step.pseudonym
            if target is not None:
                moved_key = (target, key[1])
                now[moved_key] = merged(now.get(moved_key), state)
    changed = {k: s for k, s in now.items() if s != known.get(k)}
    increments: list[tuple[BucketKey, Decimal]] = []
    for key, state in changed.items():
        increments.extend((k, -v) for k, v in contribution(known.get(key)))
        increments.extend(contribution(state))
    return TicketChanges(changed, increments)


def open_at(states: Sequence[TicketState], at: datetime) -> int:
    """Brute force: how many of the tickets are open at ``at``."""
    return sum(1 for s in states if is_open(s, at))
