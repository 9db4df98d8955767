"""A fast history for the metrics bench: the rows the write path would produce, bulk-loaded.

``LifecycleHandler`` spends ~1 ms a record on upserts, sketch locks and round trips; a history of
millions of events does not load through it in minutes. Here the same lifecycle records go
through the service's own pure code — ``increments``, ``repository.rollup``,
``repository.sketch_rows``, ``cohort_rows``, ``stage_deltas``, ``periods_between`` — and are
summed in memory; each part of the history is ``COPY``-ed into unlogged staging tables, and
:func:`finish` sums the parts into the service's tables (sketches of a row written by several
parts are merged as HyperLogLog registers are: the register-wise maximum). The resulting tables
equal the write path's for the same records (``tests/integration/test_metrics_bench_loader.py``)
except the change counters (``kpi_day_versions``, ``kpi_hour_versions``: how often a day or hour
was written, 1 here) and ``stage_counts`` rows whose net is 0.

Record ids are assumed unique across parts and each customer's records in one part (the
journey generator's customers are disjoint between chunks), as the write path's dedupe and
once-per-period cohort activity would otherwise need the whole history at hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg

from clm_metrics import hll
from clm_metrics.buckets import (
    BucketKey,
    SketchKey,
    cohort_rows,
    increments,
    sketch_items,
    stage_deltas,
)
from clm_metrics.repository import SketchRow, periods_between, rollup, sketch_rows

#: Staging table → the table it is summed into, and its key columns.
STAGING = {
    "load_buckets": ("kpi_buckets", "bucket_start, metric, source, channel, currency"),
    "load_rollups": ("kpi_rollups", "grain, bucket_start, metric, source, channel, currency"),
    "load_cohorts": ("kpi_cohorts", "period, cohort, periods_since"),
    "load_stages": ("stage_counts", "stage"),
    "load_sketches": ("kpi_sketches", "grain, bucket_start, metric, source, channel"),
}


@dataclass
class History:
    """One part of a history, summed: what the write path would add for these records."""

    minutes: dict[BucketKey, Decimal] = field(default_factory=dict)
    rollups: dict[tuple[str, BucketKey], Decimal] = field(default_factory=dict)
    sketches: dict[SketchRow, set[str]] = field(default_factory=dict)
    activity: dict[tuple[str, str, date], date] = field(default_factory=dict)
    stages: dict[str, int] = field(default_factory=dict)
    record_ids: list[str] = field(default_factory=list)

    def add(self, docs: Iterable[Mapping[str, Any]]) -> int:
        """Count the lifecycle records (parsed ``clm.lifecycle.v1`` documents); how many."""
        minutes: dict[BucketKey, Decimal] = {}
        items: dict[SketchKey, set[str]] = {}
        counted = []
        for doc in docs:
            self.record_ids.append(str(doc["record_id"]))
            counted.append(doc)
            for key, value in increments(doc):
                minutes[key] = minutes.get(key, Decimal(0)) + value
            for sketch_key, who in sketch_items(doc):
                items.setdefault(sketch_key, set()).add(who)
            for period, customer, start, cohort in cohort_rows(doc):
                self.activity.setdefault((period, customer, start), cohort)
        _add_into(self.minutes, minutes)
        _add_into(self.rollups, rollup(minutes))
        sketch_rows(items, into=self.sketches)
        _add_into(self.stages, stage_deltas(counted))
        return len(counted)


def _add_into(target: dict[Any, Any], part: Mapping[Any, Any]) -> None:
    for key, value in part.items():
        target[key] = target.get(key, 0) + value


async def prepare(conn: asyncpg.Connection) -> None:
    """Empty unlogged staging tables shaped like the service's (no keys: parts may overlap)."""
    for staging, (table, _) in STAGING.items():
        await conn.execute(f"CREATE UNLOGGED TABLE {staging} (LIKE {table})")


async def write_part(conn: asyncpg.Connection, part: History) -> None:
    """``COPY`` one part: its sums into staging, its record ids and cohort activity (disjoint
    between parts) into the service's tables."""
    await conn.copy_records_to_table(
        "load_buckets",
        records=[(*_key(k), v) for k, v in part.minutes.items()],
        columns=["bucket_start", "metric", "source", "channel", "currency", "value"],
    )
    await conn.copy_records_to_table(
        "load_rollups",
        records=[(g, *_key(k), v) for (g, k), v in part.rollups.items()],
        columns=["grain", "bucket_start", "metric", "source", "channel", "currency", "value"],
    )
    await conn.copy_records_to_table(
        "load_sketches",
        records=[
            (*row, hll.dumps(hll.add(hll.empty(), ids))) for row, ids in part.sketches.items()
        ],
        columns=["grain", "bucket_start", "metric", "source", "channel", "registers"],
    )
    counts: dict[tuple[str, date, int], int] = {}
    for (period, _, start), cohort in part.activity.items():
        key = (period, cohort, periods_between(period, cohort, start))
        counts[key] = counts.get(key, 0) + 1
    await conn.copy_records_to_table(
        "load_cohorts",
        records=[(*k, n) for k, n in counts.items()],
        columns=["period", "cohort", "periods_since", "customers"],
    )
    await conn.copy_records_to_table(
        "load_stages", records=list(part.stages.items()), columns=["stage", "customers"]
    )
    await conn.copy_records_to_table(
        "metrics_cohort_activity",
        records=list(part.activity),
        columns=["period", "customer_id", "period_start"],
    )
    await conn.copy_records_to_table(
        "metrics_processed", records=[(r,) for r in part.record_ids], columns=["record_id"]
    )


def _key(k: BucketKey) -> tuple[Any, ...]:
    return k.bucket_start, k.metric, k.source, k.channel, k.currency


async def finish(conn: asyncpg.Connection) -> None:
    """Sum the staged parts into the service's tables, set every written day's and hour's
    counter to 1, drop the staging tables."""
    await conn.execute("SET TIME ZONE 'UTC'")
    for staging, (table, key) in STAGING.items():
        if staging == "load_sketches":
            continue
        value = "customers" if table in ("kpi_cohorts", "stage_counts") else "value"
        where = f"HAVING sum({value}) <> 0" if table == "stage_counts" else ""
        await conn.execute(
            f"INSERT INTO {table} ({key}, {value}) "
            f"SELECT {key}, sum({value}) FROM {staging} GROUP BY {key} {where} ORDER BY {key}"
        )
    key = STAGING["load_sketches"][1]
    await conn.execute(
        f"INSERT INTO kpi_sketches ({key}, registers) "
        f"SELECT {key}, (array_agg(registers))[1] FROM load_sketches "
        f"GROUP BY {key} HAVING count(*) = 1 ORDER BY {key}"
    )
    shared = await conn.fetch(
        f"SELECT {key}, array_agg(registers) AS parts FROM load_sketches "
        f"GROUP BY {key} HAVING count(*) > 1"
    )
    await conn.copy_records_to_table(
        "kpi_sketches",
        records=[
            (*row[:5], hll.dumps(hll.merge(hll.loads(p) for p in row["parts"]))) for row in shared
        ],
        columns=["grain", "bucket_start", "metric", "source", "channel", "registers"],
    )
    written = """SELECT bucket_start FROM kpi_buckets
        UNION SELECT bucket_start FROM kpi_sketches WHERE grain = 'minute'"""
    await conn.execute(
        "INSERT INTO kpi_day_versions (day, version) "
        f"SELECT DISTINCT CAST(bucket_start AS date), 1 FROM ({written}) AS w"
    )
    await conn.execute(
        "INSERT INTO kpi_hour_versions (hour, version) "
        f"SELECT DISTINCT date_trunc('hour', bucket_start), 1 FROM ({written}) AS w"
    )
    for staging in STAGING:
        await conn.execute(f"DROP TABLE {staging}")
    await conn.execute("ANALYZE")
