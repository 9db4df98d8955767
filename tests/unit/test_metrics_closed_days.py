"""The closed-day cache's pure parts: which days a segment covers, its version, eviction."""

from __future__ import annotations

from datetime import UTC, date, datetime

from clm_metrics.closed_days import ClosedDayCache, closed, days_of, hours_of, version_of
from clm_metrics.windows import Segment

NOW = datetime(2026, 11, 23, 12, 34, tzinfo=UTC)


def test_a_segment_covers_the_days_it_touches_and_sums_their_versions() -> None:
    days = Segment("day", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 4, tzinfo=UTC))
    minutes = Segment(
        "minute", datetime(2026, 11, 4, 23, 5, tzinfo=UTC), datetime(2026, 11, 5, tzinfo=UTC)
    )
    assert days_of(days) == (date(2026, 11, 1), date(2026, 11, 3))
    assert days_of(minutes) == (date(2026, 11, 4), date(2026, 11, 4))
    versions = {date(2026, 10, 31): 7, date(2026, 11, 2): 2, date(2026, 11, 3): 1}
    assert version_of(days, versions) == 3
    assert version_of(minutes, versions) == 0
    assert closed(minutes, NOW)
    assert not closed(Segment("minute", datetime(2026, 11, 23, 12, tzinfo=UTC), NOW), NOW)


def test_an_entry_is_used_only_at_its_version_and_the_oldest_goes_first() -> None:
    cache = ClosedDayCache(max_entries=2)
    cache.put("a", 1, "A")
    assert cache.get("a", 1) == "A"
    assert cache.get("a", 2) is None
    cache.put("b", 1, "B")
    assert cache.get("a", 1) == "A"  # "a" is now the most recently used
    cache.put("c", 1, "C")
    assert cache.get("b", 1) is None
    assert (cache.get("a", 1), cache.get("c", 1)) == ("A", "C")


def test_hour_and_minute_segments_use_their_hours_counters() -> None:
    hours = Segment(
        "hour", datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 23, 12, tzinfo=UTC)
    )
    minutes = Segment(
        "minute", datetime(2026, 11, 23, 12, tzinfo=UTC), datetime(2026, 11, 23, 12, 34, tzinfo=UTC)
    )
    assert hours_of(minutes) == (minutes.start, datetime(2026, 11, 23, 13, tzinfo=UTC))
    counters = {
        datetime(2026, 11, 22, 23, tzinfo=UTC): 5,
        datetime(2026, 11, 23, 3, tzinfo=UTC): 2,
        datetime(2026, 11, 23, 11, tzinfo=UTC): 1,
        datetime(2026, 11, 23, 12, tzinfo=UTC): 7,
    }
    assert version_of(hours, {date(2026, 11, 23): 40}, counters) == 3
    assert version_of(minutes, {date(2026, 11, 23): 40}, counters) == 7
    assert closed(hours, NOW)  # today's hours before the current one are closed
    assert not closed(minutes, NOW)
