"""Reads of closed days and hours kept in process, exactly: an entry is used only while the
write counters (``kpi_day_versions``, ``kpi_hour_versions``) of the days or hours it covers are
what they were before it was read.

A rolling window's middle (whole days before today) and today's hours before the current one
are most of what it reads and change only when a late event lands in them; the current hour's
minutes are always read afresh. Writers bump a day's and an hour's counter in the transaction
that changes its rows, and an entry is stored under the counters read *before* its rows were, so
a write racing the read makes the entry look older than it is (a wasted miss), never newer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from clm_metrics.windows import Segment, ceil_to, floor_to


def days_of(segment: Segment) -> tuple[date, date]:
    """The first and last UTC day a segment touches."""
    return floor_to(segment.start, "day").date(), (
        ceil_to(segment.end, "day") - timedelta(days=1)
    ).date()


def hours_of(segment: Segment) -> tuple[datetime, datetime]:
    """The hours ``[first, end)`` a segment touches."""
    return floor_to(segment.start, "hour"), ceil_to(segment.end, "hour")


def version_of(
    segment: Segment, days: Mapping[date, int], hours: Mapping[datetime, int] | None = None
) -> int:
    """The sum of the segment's counters — its days' for a day segment, its hours' for an hour
    or minute one: counters only grow, so any write changes it."""
    if segment.grain != "day" and hours is not None:
        first_hour, end_hour = hours_of(segment)
        return sum(v for hour, v in hours.items() if first_hour <= hour < end_hour)
    first, last = days_of(segment)
    return sum(v for day, v in days.items() if first <= day <= last)


def closed(segment: Segment, now: datetime) -> bool:
    """Whether the segment ends by the start of the current hour (UTC)."""
    return segment.end <= floor_to(now, "hour")


@dataclass(frozen=True, slots=True)
class _Entry:
    version: Hashable
    value: Any


class VersionedLru:
    """A bounded LRU map from a read's key to its value and the counters it was read at."""

    def __init__(self, max_entries: int) -> None:
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._max = max_entries

    def get(self, key: Hashable, version: Hashable) -> Any | None:
        entry = self._entries.get(key)
        if entry is None or entry.version != version:
            return None
        self._entries.move_to_end(key)
        return entry.value

    def put(self, key: Hashable, version: Hashable, value: Any) -> None:
        self._entries[key] = _Entry(version, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


class ClosedDayCache(VersionedLru):
    """Closed segments' sums and distinct sets; ``windows`` holds whole windows' merged closed parts
    (fewer: each is a window's every key and its distinct sets)."""

    def __init__(self, max_entries: int = 512, max_windows: int = 32) -> None:
        super().__init__(max_entries)
        self.windows = VersionedLru(max_windows)
