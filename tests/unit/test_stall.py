"""When a consumer's partition counts as stalled (pure: the clock is passed in)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from clm_infra.stall import Progress, Stall, describe, stalled


def test_behind_and_not_moving_for_the_limit_is_stalled() -> None:
    parts = {0: Progress(lag=7, at=100.0), 1: Progress(lag=0, at=0.0), 2: Progress(3, 150.0)}
    assert stalled(parts, now=219.9, after_s=120) == []
    assert stalled(parts, now=220.0, after_s=120) == [Stall(0, 7, 100.0)]
    assert stalled(parts, now=270.0, after_s=120) == [Stall(0, 7, 100.0), Stall(2, 3, 150.0)]


def test_a_partition_with_nothing_to_do_is_never_stalled() -> None:
    assert stalled({4: Progress(lag=0, at=0.0)}, now=10**9, after_s=1) == []


@given(
    st.dictionaries(
        st.integers(0, 63),
        st.builds(Progress, st.integers(0, 10**6), st.floats(0, 10**6)),
        max_size=10,
    ),
    st.floats(0, 2 * 10**6),
    st.floats(0.001, 10**5),
)
def test_stalled_is_exactly_behind_and_quiet_for_long_enough(
    parts: dict[int, Progress], now: float, after_s: float
) -> None:
    found = stalled(parts, now=now, after_s=after_s)
    assert [s.partition for s in found] == sorted(
        p for p, pr in parts.items() if pr.lag > 0 and now - pr.at >= after_s
    )
    assert all(parts[s.partition] == Progress(s.lag, s.since) for s in found)


def test_described_with_since_when_in_utc_and_for_how_long() -> None:
    wall = datetime(2026, 12, 7, 12, 2, 10, tzinfo=UTC)
    text = describe([Stall(3, 120, 870.0), Stall(5, 1, 999.0)], now=1000.0, wall=wall)
    assert text == (
        "partition 3 (lag 120) since 2026-12-07T12:00:00Z (130 s), "
        "partition 5 (lag 1) since 2026-12-07T12:02:09Z (1 s)"
    )
