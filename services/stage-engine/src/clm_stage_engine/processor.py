"""Folding a batch of new events into customer states: pure, no I/O.

Per customer the batch's events are folded in memory in event-time order, so a hot customer
costs one row write per batch. Events arriving in order are applied incrementally; a late event
(earlier than what was already applied) or an identity merge makes the customer be rebuilt from
its whole event set, so the result never depends on arrival order. Events the reducer cannot
apply come back as failures with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from clm_common.events import Event, dump_event, partition_key
from clm_common.lifecycle import (
    Applied,
    CustomerState,
    Transition,
    advance,
    apply_event,
    event_order,
    evolve,
    is_late,
)
from clm_common.rules import LifecycleRules
from clm_stage_engine.records import lifecycle_record

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Item(Generic[T]):
    """A new event of the batch, the customer it lands on, and a tag (the Kafka record)."""

    tag: T
    event: Event
    key: str | None  # None: no customer (marketing spend)
    wire: bytes  # the event's wire form (:func:`dump_event`), made once for its two uses

    @classmethod
    def of(cls, tag: T, event: Event, key: str | None) -> Item[T]:
        return cls(tag, event, key, dump_event(event))


@dataclass(slots=True)
class FoldResult(Generic[T]):
    states: dict[str, CustomerState] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    outbox: list[tuple[str, bytes]] = field(default_factory=list)
    applied: list[Item[T]] = field(default_factory=list)
    failed: list[tuple[T, str]] = field(default_factory=list)


def first_of_each(pairs: Sequence[tuple[T, Event]]) -> list[tuple[T, Event]]:
    """Keep the first of each (source, event_id): a batch may carry an event twice."""
    seen: set[tuple[str, str]] = set()
    out = []
    for tag, event in pairs:
        ident = (event.source, event.event_id)
        if ident not in seen:
            seen.add(ident)
            out.append((tag, event))
    return out


def needs_history(
    items: Sequence[Item[T]],
    loaded: Mapping[str, CustomerState],
    merges: Mapping[str, Sequence[str]],
) -> set[str]:
    """Customers that must be rebuilt from their stored events: late arrivals and merges."""
    out = {key for key, sources in merges.items() if any(s in loaded for s in sources)}
    first: dict[str, Event] = {}  # per stored customer, its earliest new event
    for item in items:
        key = item.key
        if key is None or key not in loaded:  # a new customer has nothing to be late for
            continue
        seen = first.get(key)
        if seen is None or event_order(item.event) < event_order(seen):
            first[key] = item.event
    out.update(key for key, event in first.items() if is_late(loaded[key], event))
    return out


def fold(
    items: Sequence[Item[T]],
    loaded: Mapping[str, CustomerState],
    rules: LifecycleRules,
    *,
    now: datetime,
    histories: Mapping[str, Sequence[Event]] | None = None,
    merges: Mapping[str, Sequence[str]] | None = None,
) -> FoldResult[T]:
    """Apply the batch.

    ``histories`` holds, for every customer :func:`needs_history` named, all its stored events
    (and those of the profiles merged into it); ``merges`` maps a customer to the anonymous
    profiles merged into it in this batch.
    """
    histories = histories or {}
    merges = merges or {}
    result: FoldResult[T] = FoldResult()
    by_key: dict[str | None, list[Item[T]]] = {}
    for item in items:
        by_key.setdefault(item.key, []).append(item)

    for item in by_key.pop(None, []):
        result.outbox.append(
            (partition_key(item.event), lifecycle_record(item.event, None, None, wire=item.wire))
        )
        result.applied.append(item)

    for key in sorted(k for k in by_key if k is not None):
        batch = by_key[key]
        if len(batch) > 1:  # most customers have one event in a batch
            batch.sort(key=lambda i: event_order(i.event))
        before = loaded.get(key)
        if key in histories:
            _rebuild(result, key, before, histories[key], batch, merges.get(key, ()), rules, now)
        else:
            _incremental(result, key, before, batch, rules)
    return result


def _incremental(
    result: FoldResult[T],
    key: str,
    state: CustomerState | None,
    batch: Sequence[Item[T]],
    rules: LifecycleRules,
) -> None:
    for item in batch:
        try:
            applied = apply_event(state, item.event, rules)
        except Exception as exc:
            result.failed.append((item.tag, f"reducer: {exc!r}"))
            continue
        if applied.state.customer_id != key:  # an anonymous event landing on its customer
            applied = Applied(
                state=_keyed(applied.state, key),
                transitions=tuple(_retag(t, key) for t in applied.transitions),
                first_purchase=applied.first_purchase,
                repeat_purchase=applied.repeat_purchase,
                reactivation=applied.reactivation,
            )
        result.transitions.extend(applied.transitions)
        result.outbox.append((key, lifecycle_record(item.event, state, applied, wire=item.wire)))
        result.applied.append(item)
        state = applied.state
    if state is not None:
        result.states[key] = state


def _rebuild(
    result: FoldResult[T],
    key: str,
    before: CustomerState | None,
    history: Sequence[Event],
    batch: Sequence[Item[T]],
    merged_from: Sequence[str],
    rules: LifecycleRules,
    now: datetime,
) -> None:
    """Refold the customer from everything it ever had, in event-time order.

    The history records one correcting move (old stage → rebuilt stage) rather than rewriting
    the past; each new event's record carries the flags it has at its place in event time.
    """
    new_ids = {(i.event.source, i.event.event_id) for i in batch}
    per_event: dict[tuple[str, str], Applied] = {}
    state: CustomerState | None = None
    try:
        for event in sorted([*history, *(i.event for i in batch)], key=event_order):
            applied = apply_event(state, event, rules)
            state = applied.state
            if (event.source, event.event_id) in new_ids:
                per_event[(event.source, event.event_id)] = applied
        assert state is not None
        state, _ = advance(_keyed(state, key), now, rules)
    except Exception as exc:
        result.failed.extend((i.tag, f"reducer (rebuild): {exc!r}") for i in batch)
        return
    reason = "identity merge" if merged_from else "late event"
    moved = before is None or before.stage != state.stage
    correction = Transition(
        key,
        None if before is None else before.stage,
        state.stage,
        state.stage_entered_at if before is None else max(now, state.stage_entered_at),
        batch[-1].event.event_id if batch else "",
        reason,
    )
    if moved:
        result.transitions.append(correction)
    previous = before
    for n, item in enumerate(batch):
        flags = per_event[(item.event.source, item.event.event_id)]
        last = n == len(batch) - 1
        applied = Applied(
            state=state,
            transitions=(correction,) if last and moved else (),
            first_purchase=flags.first_purchase,
            repeat_purchase=flags.repeat_purchase,
            reactivation=flags.reactivation,
        )
        result.outbox.append((key, lifecycle_record(item.event, previous, applied, wire=item.wire)))
        result.applied.append(item)
        previous = state
    result.states[key] = state


def _keyed(state: CustomerState, key: str) -> CustomerState:
    return state if state.customer_id == key else evolve(state, {"customer_id": key})


def _retag(t: Transition, key: str) -> Transition:
    if t.customer_id == key:
        return t
    return Transition(key, t.from_stage, t.to_stage, t.at, t.event_id, t.reason)
