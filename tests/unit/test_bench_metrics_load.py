"""The metrics bench loader's staging partitions cover every day of the history, once."""

from __future__ import annotations

import itertools
from datetime import date, timedelta

from bench.metrics_load import months, partitions


def test_months_tile_the_range_across_a_year_end() -> None:
    start, end = date(2024, 11, 17), date(2026, 2, 3)
    ranges = months(start, end)
    assert ranges[0][0] == date(2024, 11, 1)
    assert ranges[-1] == (date(2026, 2, 1), date(2026, 3, 1))
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert all(lo.day == 1 and hi.day == 1 and lo < hi for lo, hi in ranges)
    day = start
    while day <= end:  # each day of the range in exactly one month
        assert sum(lo <= day < hi for lo, hi in ranges) == 1
        day += timedelta(days=1)


def test_partitions_name_each_month_and_the_default() -> None:
    assert partitions(date(2025, 12, 31), date(2026, 1, 1)) == ["202512", "202601", "default"]
