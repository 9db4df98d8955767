"""Which rows a time range reads (pure): minutes at the edges, hours, then days in the middle.

Every increment is written at three grains (minute, hour, day) plus an all-time total, so a
range ``[start, end)`` in whole minutes is the disjoint union of at most 59 + 23 minute buckets
at each edge, 23 + 23 hour buckets and the whole days between: the rows read grow with the
window's length in days, never with the history kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

Grain = Literal["minute", "hour", "day"]
GRAINS: dict[Grain, timedelta] = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Segment:
    grain: Grain
    start: datetime
    end: datetime


def floor_to(at: datetime, grain: Grain) -> datetime:
    if grain == "minute":
        return at.replace(second=0, microsecond=0)
    if grain == "hour":
        return at.replace(minute=0, second=0, microsecond=0)
    return at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def ceil_to(at: datetime, grain: Grain) -> datetime:
    floored = floor_to(at, grain)
    return floored if floored == at else floored + GRAINS[grain]


def plan(start: datetime, end: datetime) -> list[Segment]:
    """Segments (aligned to their grain) whose union is exactly ``[start, end)``.

    ``start`` and ``end`` must be whole minutes (UTC).
    """
    if floor_to(start, "minute") != start or floor_to(end, "minute") != end:
        raise ValueError("range bounds must be whole minutes")
    if end <= start:
        return []
    return _plan(start, end, "day")


def _plan(start: datetime, end: datetime, grain: Grain) -> list[Segment]:
    if grain == "minute":
        return [Segment("minute", start, end)] if start < end else []
    finer: Grain = "hour" if grain == "day" else "minute"
    lo, hi = ceil_to(start, grain), floor_to(end, grain)
    if lo >= hi:
        return _plan(start, end, finer)
    return [*_plan(start, lo, finer), Segment(grain, lo, hi), *_plan(hi, end, finer)]


def max_rows_per_key(start: datetime, end: datetime) -> int:
    """Buckets a range reads for one (metric, source, channel, currency)."""
    return sum(int((s.end - s.start) / GRAINS[s.grain]) for s in plan(start, end))


@dataclass(frozen=True, slots=True)
class Retention:
    """How long minute and hour rows are kept (days and all-time totals: always)."""

    minute_days: int
    hour_days: int

    def align(self, at: datetime, now: datetime) -> datetime:
        """``at`` rounded down to the finest grain still kept at that age."""
        if at < now - timedelta(days=self.hour_days):
            return floor_to(at, "day")
        if at < now - timedelta(days=self.minute_days):
            return floor_to(at, "hour")
        return floor_to(at, "minute")
