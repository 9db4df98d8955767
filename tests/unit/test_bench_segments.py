"""The segments bench's pure parts: the conditions it defines, its run order and medians, the
backfill rate from the stored times, and its section as the summary reads it."""

from __future__ import annotations

import math

import orjson

from bench.reads import Reads
from bench.segment_defs import leaf_kinds, next_cursor, phase_seconds, segment_conditions
from bench.segments import (
    Backfill,
    Listing,
    Live,
    backfill_rate,
    median_live,
    members_get,
    ratio,
    report,
    run_order,
)
from bench.stage_engine import Sustained
from bench.summary import rows
from clm_domain.segments import dump_condition, parse_condition


def test_the_conditions_are_distinct_canonical_and_a_realistic_mix() -> None:
    defined = segment_conditions(50)
    assert len({name for name, _ in defined}) == 50
    assert len({orjson.dumps(c) for _, c in defined}) == 50
    for _, condition in defined:
        assert dump_condition(parse_condition(condition)) == condition
    kinds = set().union(*(leaf_kinds(c) for _, c in segment_conditions(10)))
    assert {"all", "any", "not", "days_since", "stage", "purchases", "revenue"} <= kinds
    assert segment_conditions(10) == defined[:10]


def test_the_runs_alternate_their_order() -> None:
    assert run_order([0, 10, 50], 3) == [0, 10, 50, 50, 10, 0, 0, 10, 50]
    assert run_order([0], 1) == [0]


def _live(segments: int, rate: float) -> Live:
    return Live(segments, Sustained(1, rate, 100.0, 50.0, math.nan), {"segments": 1.5}, 7, 3)


def test_the_median_run_carries_every_runs_rate() -> None:
    got = median_live([_live(10, 900.0), _live(10, 700.0), _live(10, 800.0)])
    assert got.run.rate == 800.0
    assert got.run.rates == (900.0, 700.0, 800.0)
    assert median_live([_live(0, 2.0), _live(0, 1.0)]).run.rate == 1.0  # the lower middle


def test_the_ratio_is_against_the_run_without_segments() -> None:
    runs = [_live(0, 1000.0), _live(10, 900.0)]
    assert ratio(runs, 10) == 0.9
    assert ratio(runs, 50) is None
    assert ratio([_live(10, 900.0)], 10) is None


def test_the_backfill_rate_leaves_out_the_last_short_page() -> None:
    assert backfill_rate(200_000, 1000, 10.0) == 20_000  # a last empty page
    assert backfill_rate(200_500, 1000, 10.0) == 20_000  # a last page of 500
    assert backfill_rate(0, 1000, 0.0) == 0


def test_pages_follow_the_next_cursor() -> None:
    assert next_cursor(b'{"members": [], "next": "fill-12"}') == "fill-12"
    assert next_cursor(b'{"members": [], "next": null}') is None
    raw = members_get(7, "fill-12", 100)
    assert raw.startswith(b"GET /v1/segments/7/members?limit=100&after=fill-12 HTTP/1.1\r\n")
    assert b"after" not in members_get(7, None, 100)


def test_the_phase_seconds_are_read_from_the_exposition() -> None:
    text = (
        "# TYPE clm_stage_engine_phase_seconds_total counter\n"
        'clm_stage_engine_phase_seconds_total{phase="write"} 12.5\n'
        'clm_stage_engine_phase_seconds_total{phase="segments"} 3.25e-1\n'
        'clm_stage_engine_phase_seconds_created{phase="write"} 1.7e9\n'
    )
    assert phase_seconds(text) == {"write": 12.5, "segments": 0.325}


def test_the_summary_reads_the_section_the_bench_writes() -> None:
    reads = Reads([1.5, 1.25], [4.5, 5.5], [500, 500])
    text = report(
        [_live(0, 10_000.0), _live(10, 9_000.0), _live(50, 6_000.0)],
        Backfill(200_000, 12_345.0, 40.0, 30.0, 1000),
        Listing(500_000, 1_000_000, 30.0, reads, reads, 12.0, 501),
    )
    text += "\n_Machine: 2026-12-08 01:00 UTC · AMD EPYC · 2 cores · commit abc1234_"
    got = {r.target: (r.measured, r.ratio, r.met) for r in rows({"segments": text})}
    assert got["stage engine with 10 segments ≥ 0.85 × none"] == (  # noqa: RUF001
        "0.900 × the rate without segments",  # noqa: RUF001
        "50 segments: 0.600 × none",  # noqa: RUF001
        True,
    )
    assert got["segment backfill rate"] == ("12,345 customers/s", "", None)
    assert got["segment members page p99 (1M customers)"] == ("5.00 ms", "p50 1.38 ms", None)
