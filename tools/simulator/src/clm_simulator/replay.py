"""Raw events replayed customer by customer with the pure stage reducer, and the stages that
gives as of an instant.

Time: the stage engine applies inactivity moves (``at_risk``, ``churned``) when a later event
comes (at the time they happened), and otherwise its sweeper applies them from its clock. A
stage is therefore stated *as of* an instant: :func:`sweeps` gives the moves a sweeper running
at that instant makes, on top of the events' own moves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from clm_domain.events import Event, parse_event
from clm_domain.lifecycle import (
    Applied,
    CustomerState,
    Stage,
    Transition,
    advance,
    apply_event,
    customer_key,
    event_order,
)
from clm_domain.rules import LifecycleRules

RULES = LifecycleRules()


@dataclass(frozen=True, slots=True)
class Step:
    """One applied event: the customer before and what applying gave (None for spend)."""

    event: Event
    before: CustomerState | None
    applied: Applied | None

    @property
    def at(self) -> datetime:
        return self.event.occurred_at


@dataclass(frozen=True, slots=True)
class Sweep:
    """The inactivity moves a sweeper makes for one customer (``kind: time`` records)."""

    before: CustomerState
    after: CustomerState
    moves: tuple[Transition, ...]


def replay(
    docs: list[dict[str, Any]],
    *,
    now: datetime,
    rules: LifecycleRules = RULES,
    keys: Callable[[Event], str | None] = customer_key,
) -> list[Step]:
    """Apply every event in order (per customer, by event time) with the stage reducer and the
    rules (default: the documented ones; an explicit cancellation churns, as the stage engine
    does). ``now`` bounds future timestamps, as the ingest does. ``keys`` names the customer
    an event counts for (default: its own id; :mod:`.survivors` folds merged profiles)."""
    events = [parse_event(d, now=now) for d in docs]
    events.sort(key=event_order)
    state: dict[str, CustomerState] = {}
    steps = []
    for event in events:
        key = keys(event)
        if key is None:
            steps.append(Step(event, None, None))
            continue
        before = state.get(key)
        applied = keyed(apply_event(before, event, rules), key)
        state[key] = applied.state
        steps.append(Step(event, before, applied))
    return steps


def keyed(applied: Applied, key: str) -> Applied:
    """``applied`` as the customer ``key``'s (an event of a profile merged into it)."""
    if applied.state.customer_id == key:
        return applied
    moves = tuple(
        Transition(key, t.from_stage, t.to_stage, t.at, t.event_id, t.reason)
        for t in applied.transitions
    )
    return replace(applied, state=replace(applied.state, customer_id=key), transitions=moves)


def who(step: Step) -> str | None:
    """The customer a step counts for (None: marketing spend)."""
    return None if step.applied is None else step.applied.state.customer_id


def final_states(steps: list[Step]) -> dict[str, CustomerState]:
    """Each customer's state after its last event."""
    return {s.applied.state.customer_id: s.applied.state for s in steps if s.applied is not None}


def sweeps(steps: list[Step], until: datetime, rules: LifecycleRules = RULES) -> list[Sweep]:
    """The moves a sweeper with clock ``until`` makes after every event was applied."""
    out = []
    for state in final_states(steps).values():
        after, moves = advance(state, until, rules)
        if moves:
            out.append(Sweep(state, after, tuple(moves)))
    return out


def stages_as_of(
    steps: list[Step], until: datetime, rules: LifecycleRules = RULES
) -> dict[str, Stage]:
    """Every customer's stage as of ``until`` (its events, then the sweeper's moves)."""
    stages = {key: state.stage for key, state in final_states(steps).items()}
    for sweep in sweeps(steps, until, rules):
        stages[sweep.after.customer_id] = sweep.after.stage
    return stages


def next_inactivity_move(
    steps: list[Step], until: datetime, rules: LifecycleRules = RULES
) -> datetime | None:
    """The first time after ``until`` at which some customer would move by inactivity (until
    then, with no new event, every stage stays what :func:`stages_as_of` says)."""
    far = datetime.max.replace(tzinfo=UTC)
    later: list[datetime] = []
    for state in final_states(steps).values():
        current, _ = advance(state, until, rules)
        _, moves = advance(current, far, rules)
        later.extend(m.at for m in moves)
    return min(later, default=None)


def stages_at(
    steps: list[Step],
    at: datetime,
    source: str | None,
    channel: str | None,
    swept: list[Sweep] | tuple[()] = (),
) -> dict[str, int]:
    """Customers per stage at an instant (by each customer's last move before it)."""
    last: dict[str, tuple[str, str, str]] = {}
    moves = [
        (s.applied.state, t) for s in steps if s.applied is not None for t in s.applied.transitions
    ]
    moves += [(w.after, t) for w in swept for t in w.moves]  # after each one's events
    for st, t in moves:
        if t.at.replace(second=0, microsecond=0) < at:
            last[st.customer_id] = (t.to_stage.value, st.first_source, st.first_channel or "")
    out = {s.value: 0 for s in Stage}
    for stage, src, ch in last.values():
        if (source is None or src == source) and (channel is None or ch == channel):
            out[stage] += 1
    return out
