"""Reads of closed days kept in process, exactly: an entry is used only while the write counters
(``kpi_day_versions``) of the days it covers are what they were before it was read.

A rolling window's middle (whole days before today) is most of what it reads and changes only
when a late event lands in it; today's hours and minutes are always read afresh. Writers bump a
day's counter in the transaction that changes its rows, and an entry is stored under the
counters read *before* its rows were, so a write racing the read makes the entry look older
than it is (a wasted miss), never newer.
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


def version_of(segment: Segment, versions: Mapping[date, int]) -> int:
    """The sum of the segment's day counters: counters only grow, so any write changes it."""
    first, last = days_of(segment)
    return sum(v for day, v in versions.items() if first <= day <= last)


def closed(segment: Segment, now: datetime) -> bool:
    """Whether the segment ends by the start of today (UTC): no on-time event lands there."""
    return segment.end <= floor_to(now, "day")


@dataclass(frozen=True, slots=True)
class _Entry:
    version: int
    value: Any


class ClosedDayCache:
    """A bounded LRU map from a read's key to its value and the day counters it was read at."""

    def __init__(self, max_entries: int = 512) -> None:
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._max = max_entries

    def get(self, key: Hashable, version: int) -> Any | None:
        entry = self._entries.get(key)
        if entry is None or entry.version != version:
            return None
        self._entries.move_to_end(key)
        return entry.value

    def put(self, key: Hashable, version: int, value: Any) -> None:
        self._entries[key] = _Entry(version, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
