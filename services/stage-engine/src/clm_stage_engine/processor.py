"""Folding a batch of new events into customer states: pure, no I/O.

Per customer the batch's events are folded in memory in event-time order, so a hot customer
costs one row write per batch. Events arriving in order are applied incrementally; a late event
(earlier than what was already applied) or an identity merge makes the customer be rebuilt from
its whole event set, so the result never depends on arrival order. A rebuild also publishes a
``restatement``: the customer's timeline as it was counted before (each profile's stored events
folded alone, in event-time order, up to the inactivity moves it had made) to take back, and
its timeline now to add, so consumers that count anything of a customer's past (flows, first
touch, flags, cohorts) end up with the counts of the event set in event-time order. Events the
reducer cannot apply come back as failures with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Generic, TypeVar

from clm_domain.events import Event, dump_event, partition_key
from clm_domain.lifecycle import (
    Applied,
    CustomerState,
    Transition,
    advance,
    apply_event,
    event_order,
    is_late,
)
from clm_domain.lifecycle_records import TimelineItem
from clm_domain.p_alive import AliveModel
from clm_domain.rules import LifecycleRules
from clm_stage_engine.records import (
    Reason,
    Timeline,
    lifecycle_record,
    record_id,
    restatement_records,
    sweep_item,
    timeline_item,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Item(Generic[T]):
    """A new event of the batch, the customer it lands on, and a tag (the Kafka record)."""

    tag: T
    event: Event
    key: str | None  # None: no customer (marketing spend)
    wire: bytes  # the event's JSON, for its two uses: the event log and its record

    @staticmethod
    def of(tag: T, event: Event, key: str | None, wire: bytes | None = None) -> Item[T]:
        """``wire``: the JSON the event was decoded from, when there is one (a Kafka
        record's value, which the ingest wrote as :func:`dump_event`): stored and published
        as it came, rather than serialized again."""
        return Item(tag, event, key, dump_event(event) if wire is None else wire)


@dataclass(frozen=True, slots=True)
class Fold:
    """How the batch folds: the rules, and the model the P(alive) rule reads (None: off)."""

    rules: LifecycleRules
    model: AliveModel | None = None


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
    histories: Mapping[str, Sequence[Sequence[Event]]] | None = None,
    merges: Mapping[str, Sequence[str]] | None = None,
    merged_states: Mapping[str, CustomerState] | None = None,
    model: AliveModel | None = None,
) -> FoldResult[T]:
    """Apply the batch.

    ``histories`` holds, for every customer :func:`needs_history` named, its stored events as
    groups, one per profile they were applied on: the customer's own, then those of each
    profile merged into it in this batch (``merges`` maps a customer to them; their states
    before the batch are in ``merged_states``). A group is folded alone to know what was
    counted of it. ``model``: the predictive model the P(alive) rule reads (None: off).
    """
    histories = histories or {}
    merges = merges or {}
    merged_states = merged_states or {}
    result: FoldResult[T] = FoldResult()
    by_key: dict[str | None, list[Item[T]]] = {}
    for item in items:
        by_key.setdefault(item.key, []).append(item)

    _without_customer(result, by_key.pop(None, []))

    for key in sorted(k for k in by_key if k is not None):
        batch = by_key[key]
        if len(batch) > 1:  # most customers have one event in a batch
            batch.sort(key=lambda i: event_order(i.event))
        before = loaded.get(key)
        if key in histories:
            groups = histories[key]
            sources = [(s, merged_states.get(s)) for s in merges.get(key, ())]
            job = Rebuild(key, before, groups, batch, sources)
            _rebuild(result, job, Fold(rules, model), now)
        else:
            _incremental(result, key, before, batch, Fold(rules, model))
    return result


def _without_customer(result: FoldResult[T], batch: Sequence[Item[T]]) -> None:
    """Events of no customer (marketing spend): a record each, no state."""
    for item in batch:
        result.outbox.append(
            (partition_key(item.event), lifecycle_record(item.event, None, None, wire=item.wire))
        )
        result.applied.append(item)


def _incremental(
    result: FoldResult[T],
    key: str,
    state: CustomerState | None,
    batch: Sequence[Item[T]],
    how: Fold,
) -> None:
    for item in batch:
        try:
            applied = apply_event(state, item.event, how.rules, how.model)
        except Exception as exc:
            result.failed.append((item.tag, f"reducer: {exc!r}"))
            continue
        if applied.state.customer_id != key:  # an anonymous event landing on its customer
            applied = _rekeyed(applied, key)
        result.transitions.extend(applied.transitions)
        result.outbox.append((key, lifecycle_record(item.event, state, applied, wire=item.wire)))
        result.applied.append(item)
        state = applied.state
    if state is not None:
        result.states[key] = state


@dataclass(frozen=True, slots=True)
class Rebuild(Generic[T]):
    """A customer refolded from everything it ever had: its state before the batch, its
    stored events in groups (its own, then each absorbed profile's), the batch's new events
    and the absorbed profiles with their states before the batch."""

    key: str
    before: CustomerState | None
    groups: Sequence[Sequence[Event]]
    batch: Sequence[Item[T]]
    sources: Sequence[tuple[str, CustomerState | None]]


def _rebuild(result: FoldResult[T], job: Rebuild[T], how: Fold, now: datetime) -> None:
    """Refold the customer from everything it ever had, in event-time order.

    The history records one correcting move (old stage → rebuilt stage) rather than rewriting
    the past; each new event's record carries the flags it has at its place in event time,
    and a restatement takes back each profile's timeline as counted before and adds the
    rebuilt one (the new events' customer part included: their records say ``restated``).
    """
    key, before, batch = job.key, job.before, job.batch
    try:
        old, done, applied_new = _refold(job, how, now)
    except Exception as exc:
        result.failed.extend((i.tag, f"reducer (rebuild): {exc!r}") for i in batch)
        return
    state = done.state
    assert state is not None  # _refold checked it
    reason: Reason = "identity merge" if job.sources else "late event"
    move = _correction(key, before, state, batch, reason, now)
    if move is not None:
        result.transitions.append(move)
    _restated_records(result, key, before, state, batch, applied_new, move)
    cause = record_id(batch[0].event) if batch else ""
    result.outbox.extend(
        (key, r)
        for r in restatement_records(
            key, cause=cause, reason=reason, retract=old, add=[done], at=now
        )
    )
    result.states[key] = state


def _refold(
    job: Rebuild[T], how: Fold, now: datetime
) -> tuple[list[Timeline], Timeline, dict[tuple[str, str], Applied]]:
    """What was counted of the customer and of each absorbed profile, the rebuilt timeline,
    and what applying each event gave in it."""
    key, groups = job.key, job.groups
    old = counted([(key, job.before, groups[0] if groups else ())], how.rules, how.model)
    old += counted(
        [
            (source, state, group)
            for (source, state), group in zip(job.sources, groups[1:], strict=True)
        ],
        how.rules,
        how.model,
    )
    events = [*(e for g in groups for e in g), *(i.event for i in job.batch)]
    done, applied_new = fold_timeline(key, events, how.rules, until=now, model=how.model)
    assert done.state is not None
    return old, done, applied_new


def _correction(
    key: str,
    before: CustomerState | None,
    state: CustomerState,
    batch: Sequence[Item[T]],
    reason: Reason,
    now: datetime,
) -> Transition | None:
    """The one move a rebuild records (old stage → rebuilt stage); None: the stage held."""
    if before is not None and before.stage == state.stage:
        return None
    return Transition(
        key,
        None if before is None else before.stage,
        state.stage,
        state.stage_entered_at if before is None else max(now, state.stage_entered_at),
        batch[-1].event.event_id if batch else "",
        reason,
    )


def _restated_records(
    result: FoldResult[T],
    key: str,
    before: CustomerState | None,
    state: CustomerState,
    batch: Sequence[Item[T]],
    applied_new: Mapping[tuple[str, str], Applied],
    move: Transition | None,
) -> None:
    """Each new event's record, with its flags at its place in event time (the last one
    carries the correcting move)."""
    previous = before
    for n, item in enumerate(batch):
        flags = applied_new[(item.event.source, item.event.event_id)]
        last = n == len(batch) - 1
        applied = Applied(
            state=state,
            transitions=(move,) if last and move is not None else (),
            first_purchase=flags.first_purchase,
            repeat_purchase=flags.repeat_purchase,
            reactivation=flags.reactivation,
        )
        record = lifecycle_record(item.event, previous, applied, wire=item.wire, restated=True)
        result.outbox.append((key, record))
        result.applied.append(item)
        previous = state


def fold_timeline(
    key: str,
    events: Iterable[Event],
    rules: LifecycleRules,
    *,
    until: datetime | None,
    model: AliveModel | None = None,
) -> tuple[Timeline, dict[tuple[str, str], Applied]]:
    """A profile's timeline: ``events`` folded in event-time order (each one's item), then
    the time-based moves due by ``until`` (None: none); and what applying each event gave."""
    state: CustomerState | None = None
    items: list[TimelineItem] = []
    applied_by_id: dict[tuple[str, str], Applied] = {}
    for event in sorted(events, key=event_order):
        applied = apply_event(state, event, rules, model)
        if applied.state.customer_id != key:
            applied = _rekeyed(applied, key)
        items.append(timeline_item(event, state, applied))
        applied_by_id[(event.source, event.event_id)] = applied
        state = applied.state
    if state is not None and until is not None:
        after, moves = advance(state, until, rules, model)
        if moves:
            items.append(sweep_item(state, after, moves))
            state = after
    return Timeline(key, state, tuple(items)), applied_by_id


def counted(
    profiles: Iterable[tuple[str, CustomerState | None, Sequence[Event]]],
    rules: LifecycleRules,
    model: AliveModel | None = None,
) -> list[Timeline]:
    """What was counted of each profile before (its id, its stored state, its stored events):
    its events folded alone, then the inactivity moves that brought it to its stored stage
    (moves up to when it entered that stage: the sweeper's, or a rebuild's). Profiles with
    no stored state or no events were never counted."""
    out = []
    for who, state, events in profiles:
        if state is None or not events:
            continue
        timeline, _ = fold_timeline(who, events, rules, until=state.stage_entered_at, model=model)
        out.append(timeline)
    return out


def _keyed(state: CustomerState, key: str) -> CustomerState:
    return state if state.customer_id == key else replace(state, customer_id=key)


def _rekeyed(applied: Applied, key: str) -> Applied:
    return Applied(
        state=_keyed(applied.state, key),
        transitions=tuple(_retag(t, key) for t in applied.transitions),
        first_purchase=applied.first_purchase,
        repeat_purchase=applied.repeat_purchase,
        reactivation=applied.reactivation,
    )


def _retag(t: Transition, key: str) -> Transition:
    if t.customer_id == key:
        return t
    return Transition(key, t.from_stage, t.to_stage, t.at, t.event_id, t.reason)
