"""The bench summary reads each target's figure from the sections as the benchmarks write them."""

from __future__ import annotations

from bench.reads import Reads, percentile
from bench.summary import NOT_FOUND, ORDER, anchor, report, rows, when

INGEST = """## Ingest

| run | events/s | vs (a) | vs (b) | p50 ms | p99 ms | note |
|---|---:|---:|---:|---:|---:|---|
| (d) ingest, 100-event batches, 8 connections | 26,010 | 15% | 47% | 24.1 | 119 | events/s |

| target | measured | met |
|---|---:|---|
| batched ingest ≥ 25,000 events/s | 26,010 | **no** |
| batched ingest ≥ 50% of (b) | 47% | **no** |

_Machine: 2026-11-23 13:55 UTC · AMD EPYC · 2 cores · commit a569e01_"""

STAGE = """## Stage engine

| run | rate | engine CPU / event | Postgres CPU / event | total |
|---|---:|---:|---:|---:|
| sustained rate, one process (batches of 2000) | **3,100 events/s** | 70 µs | 50 µs | 120 µs |
| sustained rate, 2 processes in one group (batches of 2000) | **4,915 events/s** | 80 µs | 58 µs | 138 µs |

| measure | value |
|---|---|
| best sustained rate (2 processes in one group) | **4,915 events/s** |
| ratio engine ÷ raw COPY | 0.026 |
| `GET /v1/customers/{id}` over HTTP (keep-alive), 5 rounds | p50 1.88 ms · p99 5.24 ms (rounds' p99s: 4.1 / 5.2 ms) |

_Machine: 2026-11-23 17:08 UTC · AMD EPYC · 2 cores · commit 026a8a8_"""

METRICS = """## metrics: KPI latency vs history

| history | customers | events | load (s) | minute rows | rollup rows | distinct rows | p50 (ms) | p99 (ms) |
|---|---|---|---|---|---|---|---|---|
| small | 1,250 | 7,651 | 12 | 32,909 | 64,549 | 46,846 | 16.4 | 39.9 |
| large | 80,000 | 494,487 | 484 | 2,125,979 | 2,337,583 | 1,731,854 | 44.0 | 48.2 |

p99 ratio large / small: **1.21** (target ≤ 1.5).

Bitmap storage: **2,345.6 kB a day** of `kpi_distinct` on average over the 730 days (1,234.5 kB of
it the bitmaps themselves; 1.90 times for row headers, keys, TOAST and the primary key)."""

METRICS_CPU = """## metrics: handler CPU per record against the sketch version

| checkout | commit | records | median CPU µs / record | each run's CPU µs / record | median wall µs / record |
|---|---|---:|---:|---|---:|
| exact (this) | abc1234 metrics: x | 25,940 | 510.0 | 500 / 510 / 530 | 1400.0 |
| sketch (baseline) | 4f99b4d Chain | 25,940 | 420.0 | 410 / 420 / 430 | 1300.0 |

CPU ratio exact / sketch: **1.214** (target ≤ 1.15: **not met**); each round's own ratio 1.2."""

E2E = """## End to end: the whole stack under load

| target | measured | ratio | met |
|---|---:|---:|---|
| end-to-end p50 ≤ 50 ms at 50% load | 31.0 ms | 0.62 x target | yes |
| end-to-end p99 ≤ 250 ms at 50% load | 300.0 ms | 1.20 x target | **no** |
| read p99 ≤ 10 ms under ingest | 8.00 ms | 2.00 x idle | yes |
| ingest RSS < 300 MB | 97 MB |  | yes |"""


def by_target(sections: dict[str, str]) -> dict[str, tuple[str, str, bool | None]]:
    return {r.target: (r.measured, r.ratio, r.met) for r in rows(sections)}


def test_every_target_is_read_from_its_section() -> None:
    got = by_target({"ingest": INGEST, "stage-engine": STAGE, "metrics": METRICS, "e2e": E2E})
    assert list(got) == ORDER
    # met is decided from the figure, not from the section's own verdict
    assert got["batched ingest ≥ 25,000 events/s"] == (
        "26,010 events/s",
        "47% of a bare aiokafka producer",
        True,
    )
    assert got["stage engine ≥ 20,000 events/s"] == (
        "4,915 events/s",
        "0.026 of a raw COPY (2 processes in one group)",
        False,
    )
    assert got["read p99 ≤ 5 ms idle"] == ("5.24 ms", "", False)
    assert got["KPI p99 < 50 ms (large history)"] == ("48.2 ms", "", True)
    assert got["KPI p99 history ratio ≤ 1.5"] == ("1.21", "large ÷ small", True)
    assert got["end-to-end p99 ≤ 250 ms at 50% load"] == ("300.0 ms", "1.20 x target", False)
    assert got["read p99 ≤ 10 ms under ingest"] == ("8.00 ms", "2.00 x idle", True)
    assert got["metrics RSS < 300 MB"] == (NOT_FOUND, "", None)


def test_the_cpu_ratio_and_the_bitmap_storage_are_read_from_their_sections() -> None:
    got = by_target({"metrics": METRICS, "metrics-cpu": METRICS_CPU})
    assert got["metrics CPU per event ≤ 1.15 × the sketch version"] == (  # noqa: RUF001
        "1.214 × the sketch version's",  # noqa: RUF001
        "median 510.0 vs 420.0 µs a replayed record, alternating runs",
        False,
    )
    # a figure the issue asks for without a target: neither met nor missed
    assert got["distinct bitmap storage a day (large history)"] == (
        "2,345.6 kB",
        "`kpi_distinct` with keys and index; 1,234.5 kB the bitmaps",
        None,
    )


def test_a_missing_section_leaves_its_targets_unmeasured() -> None:
    got = by_target({"ingest": INGEST})
    assert got["batched ingest ≥ 25,000 events/s"][2] is True
    assert all(got[t] == (NOT_FOUND, "", None) for t in ORDER[1:])
    text = report({"ingest": INGEST})
    assert "| stage engine ≥ 20,000 events/s | not found |  | - | stage-engine (not run) |" in text
    assert "[ingest](#ingest) (2026-11-23 13:55, a569e01)" in text


def test_anchor_is_githubs_slug_of_the_first_heading() -> None:
    assert anchor(METRICS) == "#metrics-kpi-latency-vs-history"
    assert anchor(E2E) == "#end-to-end-the-whole-stack-under-load"


def test_reads_report_the_median_of_the_rounds_p99s() -> None:
    reads = Reads(p50s=[1.0, 2.0, 9.0], p99s=[4.0, 30.0, 5.0], counts=[1000, 1000, 1000])
    assert (reads.p50_ms, reads.p99_ms) == (2.0, 5.0)
    assert reads.spread() == "4.0 / 30.0 / 5.0"
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0


def test_the_run_column_carries_the_cpu_gauge_when_the_machine_line_has_one() -> None:
    line = "_Machine: 2026-11-24 00:22 UTC · AMD EPYC · Python 3.11.7 · CPU gauge 145 ms · commit abc1234_"
    assert when(line) == "2026-11-24 00:22, abc1234, CPU gauge 145 ms"
    assert when(STAGE) == "2026-11-23 17:08, 026a8a8"


def test_the_run_column_names_the_commit_of_a_run_from_a_working_tree() -> None:
    section = (
        "Measured on 1 and 2 processes and so on.\n\n"
        "_Machine: 2026-11-23 22:33 UTC · AMD EPYC · 2 cores · commit bc60e95 "
        "(run from its working tree before it was committed on f4d0063)_"
    )
    assert when(section) == "2026-11-23 22:33, bc60e95"


MODEL_FIT = """## Predictive models: fit and scoring at the bench history

| step | seconds |
|---|---:|
| model fit, total | **5.04** |
| scoring every customer (P(alive), 90-day purchases, 12-month CLV) | 1.87 |

Model fit 5.04 s (target < 60 s: yes)."""


def test_the_model_fit_time_is_read_from_its_section() -> None:
    got = by_target({"model-fit": MODEL_FIT})
    assert got["model fit of 1.65M customers < 60 s"] == ("5.04 s", "scoring them: 1.87 s", True)
