"""Which segments a customer is in, when time alone may change that, and what changed.
Pure: the clock and the scores are passed in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime

from clm_domain.customer_state import CustomerState
from clm_domain.segments.compile import Predicate, ScoreSource


@dataclass(frozen=True)
class Segment:
    """One version of a segment definition, compiled."""

    id: int
    version: int
    name: str
    predicate: Predicate


def members_of(
    segments: Iterable[Segment],
    state: CustomerState,
    now: datetime,
    scores: ScoreSource | None,
) -> frozenset[int]:
    """The ids of the segments ``state`` is in at ``now``; ``scores`` is asked at most once
    for all of them, and only if a score fact decides one."""
    source = _once(scores) if scores is not None else None
    return frozenset(s.id for s in segments if s.predicate.matches(state, now, source))


def due_at(segments: Iterable[Segment], state: CustomerState, now: datetime) -> datetime | None:
    """The earliest instant after ``now`` at which time alone may change the segments
    ``state`` is in (None: never)."""
    due: datetime | None = None
    for segment in segments:
        if segment.predicate.time_relative:
            at = segment.predicate.next_change(state, now)
            if at is not None and (due is None or at < due):
                due = at
    return due


def changes(before: frozenset[int], after: frozenset[int]) -> tuple[list[int], list[int]]:
    """The segments entered and the segments left (each sorted by id)."""
    return sorted(after - before), sorted(before - after)


def _once(scores: ScoreSource) -> ScoreSource:
    """``scores`` asked once per (state, date), however many segments read it."""
    asked: dict[tuple[int, date], Mapping[str, float | None] | None] = {}

    def once(state: CustomerState, day: date) -> Mapping[str, float | None] | None:
        key = (id(state), day)
        if key not in asked:
            asked[key] = scores(state, day)
        return asked[key]

    return once
