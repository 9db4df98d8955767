"""A fast history for the metrics bench: the rows the write path would produce, bulk-loaded.

``LifecycleHandler`` spends ~1 ms a record on upserts, row locks and round trips; a history of
ten million events does not load through it in minutes. Here the same lifecycle records go
through the service's own pure code — ``increments``, ``distinct_items``, ``cohort_rows``,
``stage_deltas``, ``periods_between`` and the bitmap encoding of :mod:`clm_metrics.distinct` —
and what that code yields is summed in two steps:

1. each loader process sums a part of the history (disjoint customers) in memory — the minute
   increments per bucket key, each customer's visits or orders per minute distinct key, the
   cohort activity and stage deltas — and ``COPY``-es the part into unlogged staging tables,
   its record ids, cohort activity and customer ids (numbered by the identity sequence, as the
   write path numbers them) straight into the service's tables;
2. Postgres sums the parts month by month (:func:`sum_buckets`: one ``GROUP BY`` the minutes
   of a month, and their hours and UTC days — the keys ``repository.rows.rollup`` gives a minute;
   :func:`finish`: the all-time totals at the epoch), and :func:`write_distinct` builds every
   distinct row of a month — each minute key's members also go to its hour and day, each also
   merged over every source, every channel and both, the rows ``repository.rows.distinct_rows``
   spreads a minute's members to — the numbers of each row (and each purchaser's orders in
   it) gathered in Postgres, made a Roaring bitmap (and the row's ``repeat_purchasers``: who
   has two or more orders in it) and encoded by ``distinct.dumps`` (months side by side in
   processes).

The staging tables of the minutes are partitioned by month, so each month's sums read only
its own rows and fit in memory; the primary keys of the big tables are dropped while they
fill and built once at the end (:func:`drop_keys`, :func:`add_key`).

The resulting tables equal the write path's for the same records
(``tests/integration/test_metrics_bench_loader.py``; the bitmaps compared by the ids their
numbers stand for, as the numbers depend on arrival order) except the change counters
(``kpi_day_versions``, ``kpi_hour_versions``: how often a day or hour was written, 1 here) and
``stage_counts`` rows whose net is 0.

Record ids are assumed unique across parts and each customer's records in one part (the
journey generator's customers are disjoint between chunks), as the write path's dedupe and
once-per-period cohort activity would otherwise need the whole history at hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from pyroaring import BitMap

from clm_metrics import distinct
from clm_metrics.buckets import increments, stage_deltas
from clm_metrics.cohorts import cohort_rows, periods_between
from clm_metrics.members import distinct_items, leaving
from clm_metrics.repository.rows import ANY
from clm_metrics.tickets import TicketKey, TicketState, advance, ticket_event

#: Staging tables: their shape. The first two are partitioned by month (see :func:`prepare`).
STAGING = {
    "load_buckets": "(LIKE kpi_buckets)",
    "load_members": (
        "(bucket_start timestamptz, metric text, source text, channel text, customer_id text,"
        " n integer)"
    ),
    "load_cohorts": "(LIKE kpi_cohorts)",
    "load_stages": "(LIKE stage_counts)",
    "load_keys": "(tbl text, name text, definition text)",
}
PARTITIONED = ("load_buckets", "load_members")
#: The tables whose primary key is dropped while they fill and built once at the end.
KEYED = (
    "kpi_buckets",
    "kpi_rollups",
    "kpi_distinct",
    "metrics_processed",
    "metrics_cohort_activity",
)
BUCKET_KEY = "bucket_start, metric, source, channel, currency"
DISTINCT_KEY = "grain, bucket_start, metric, source, channel"
MinuteKey = tuple[datetime, str, str, str, str]
#: A minute distinct key and a customer id.
MemberKey = tuple[datetime, str, str, str, str]


@dataclass
class History:
    """One part of a history, summed: what the write path would add for these records."""

    minutes: dict[MinuteKey, Decimal] = field(default_factory=dict)
    members: dict[MemberKey, int] = field(default_factory=dict)
    activity: dict[tuple[str, str, date], tuple[int, date]] = field(default_factory=dict)
    stages: dict[str, int] = field(default_factory=dict)
    record_ids: list[str] = field(default_factory=list)
    tickets: dict[TicketKey, TicketState] = field(default_factory=dict)

    def _advance_tickets(self, doc: Mapping[str, Any]) -> None:
        """The record's ticket event or leaving profile over the part's ticket states (the
        write path's :func:`clm_metrics.tickets.advance`), its level changes into the minutes."""
        ticket, gone = ticket_event(doc), leaving(doc)
        if ticket is not None:
            known = {ticket.key: s} if (s := self.tickets.get(ticket.key)) else {}
            changes = advance(known, [ticket])
        elif gone is not None:
            names = {gone.who, gone.into, gone.pseudonym}
            known = {k: s for k, s in self.tickets.items() if k[0] in names}
            if not known:
                return
            changes = advance(known, [gone])
        else:
            return
        for key, state in changes.states.items():
            if state is None:
                self.tickets.pop(key, None)
            else:
                self.tickets[key] = state
        for k, value in changes.increments:
            minute = (k.bucket_start, k.metric, k.source, k.channel, k.currency)
            self.minutes[minute] = self.minutes.get(minute, 0) + value

    def add(self, docs: Iterable[Mapping[str, Any]]) -> int:
        """Count the lifecycle records (parsed ``clm.lifecycle.v1`` documents); how many."""
        minutes, members, activity = self.minutes, self.members, self.activity
        counted = []
        for doc in docs:
            self.record_ids.append(str(doc["record_id"]))
            counted.append(doc)
            for k, value in increments(doc):
                key = (k.bucket_start, k.metric, k.source, k.channel, k.currency)
                minutes[key] = minutes.get(key, 0) + value
            for s, who in distinct_items(doc):
                member = (s.bucket_start, s.metric, s.source, s.channel, who)
                members[member] = members.get(member, 0) + 1
            for period, customer, start, cohort, _ in cohort_rows(doc):
                n, first = activity.get((period, customer, start), (0, cohort))
                activity[(period, customer, start)] = (n + 1, first)
            self._advance_tickets(doc)
        for stage, delta in stage_deltas(counted).items():
            self.stages[stage] = self.stages.get(stage, 0) + delta
        return len(counted)


def months(start: date, end: date) -> list[tuple[date, date]]:
    """``[first, next)`` of every month from ``start``'s to ``end``'s (UTC)."""
    out = []
    month = start.replace(day=1)
    while month <= end:
        following = (month + timedelta(days=32)).replace(day=1)
        out.append((month, following))
        month = following
    return out


def partitions(start: date, end: date) -> list[str]:
    """The suffixes of the monthly staging partitions, and of the default one."""
    return [f"{lo:%Y%m}" for lo, _ in months(start, end)] + ["default"]


async def tune(conn: asyncpg.Connection) -> None:
    """Session settings for the big sums: sort and hash in memory, UTC days."""
    await conn.execute("SET TIME ZONE 'UTC'")
    await conn.execute("SET work_mem = '256MB'")
    await conn.execute("SET maintenance_work_mem = '1GB'")


async def prepare(conn: asyncpg.Connection, start: date, end: date) -> None:
    """Empty unlogged staging tables (no keys: parts may overlap), the minute ones partitioned
    by the months of ``[start, end]`` (UTC; anything outside goes to a default partition);
    the primary keys of the tables the load fills dropped (:func:`finish` builds them)."""
    await tune(conn)
    for staging, shape in STAGING.items():
        by = " PARTITION BY RANGE (bucket_start)" if staging in PARTITIONED else ""
        await conn.execute(f"CREATE UNLOGGED TABLE {staging} {shape}{by}")
        if not by:
            continue
        for lo, hi in months(start, end):
            await conn.execute(
                f"CREATE UNLOGGED TABLE {staging}_{lo:%Y%m} PARTITION OF {staging} "
                f"FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"
            )
        await conn.execute(
            f"CREATE UNLOGGED TABLE {staging}_default PARTITION OF {staging} DEFAULT"
        )
    for key in await drop_keys(conn):
        await conn.execute("INSERT INTO load_keys VALUES ($1, $2, $3)", *key)


async def drop_keys(conn: asyncpg.Connection) -> list[tuple[str, str, str]]:
    """Drop the primary keys of the big tables (faster filled without, built after): table,
    name and definition of each (for :func:`add_key`)."""
    keys = []
    for table in KEYED:
        name, definition = await conn.fetchrow(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = CAST($1 AS regclass) AND contype = 'p'",
            table,
        )
        await conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
        keys.append((table, name, definition))
    return keys


async def write_part(conn: asyncpg.Connection, part: History) -> None:
    """``COPY`` one part: its sums into staging, its record ids and cohort activity (disjoint
    between parts) into the service's tables."""
    await conn.copy_records_to_table(
        "load_buckets",
        records=[(*k, v) for k, v in part.minutes.items()],
        columns=["bucket_start", "metric", "source", "channel", "currency", "value"],
    )
    await conn.copy_records_to_table(
        "load_members",
        records=[(*k, n) for k, n in part.members.items()],
        columns=["bucket_start", "metric", "source", "channel", "customer_id", "n"],
    )
    await conn.copy_records_to_table(
        "metrics_customer_numbers",
        records=[(who,) for who in sorted({k[4] for k in part.members})],
        columns=["customer_id"],
    )
    counts: dict[tuple[str, date, int], int] = {}
    for (period, _, start), (_, cohort) in part.activity.items():
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
        "metrics_tickets",
        records=[
            (who, tid, s.opened_at, s.solved_at, s.source, s.channel)
            for (who, tid), s in part.tickets.items()
        ],
        columns=["customer_id", "ticket_id", "opened_at", "solved_at", "source", "channel"],
    )
    await conn.copy_records_to_table(
        "metrics_cohort_activity",
        records=[(*key, n, cohort) for key, (n, cohort) in part.activity.items()],
        columns=["period", "customer_id", "period_start", "purchases", "cohort"],
    )
    await conn.copy_records_to_table(
        "metrics_processed", records=[(r,) for r in part.record_ids], columns=["record_id"]
    )


async def sum_buckets(conn: asyncpg.Connection, partition: str) -> None:
    """One month's minutes summed over the parts, and their hours and UTC days: the keys of
    ``repository.rows.rollup`` (the all-time totals: :func:`finish`)."""
    await tune(conn)
    staged = f"load_buckets_{partition}"
    await conn.execute(
        f"INSERT INTO kpi_buckets ({BUCKET_KEY}, value) SELECT {BUCKET_KEY}, sum(value) "
        f"FROM {staged} GROUP BY {BUCKET_KEY} ORDER BY {BUCKET_KEY}"
    )
    for grain in ("hour", "day"):
        start = f"date_trunc('{grain}', bucket_start)"
        await conn.execute(
            f"INSERT INTO kpi_rollups (grain, bucket_start, {VALUE_KEY}, value) "
            f"SELECT '{grain}', {start}, {VALUE_KEY}, sum(value) FROM {staged} "
            f"GROUP BY {start}, {VALUE_KEY} ORDER BY {start}, {VALUE_KEY}"
        )


VALUE_KEY = "metric, source, channel, currency"
_DISTINCT = f"""
WITH spread AS (
    SELECT g.grain, g.start AS bucket_start, m.metric, c.source, c.channel, k.number, m.n
    FROM load_members_{{partition}} AS m
    JOIN metrics_customer_numbers AS k USING (customer_id)
    CROSS JOIN LATERAL (VALUES ('minute', m.bucket_start),
                               ('hour', date_trunc('hour', m.bucket_start)),
                               ('day', date_trunc('day', m.bucket_start))) AS g (grain, start)
    CROSS JOIN LATERAL (VALUES (m.source, m.channel), (m.source, $1::text),
                               ($1::text, m.channel), ($1::text, $1::text)) AS c (source, channel)
), counted AS (
    SELECT {DISTINCT_KEY}, number, sum(n) AS n FROM spread GROUP BY {DISTINCT_KEY}, number
)
SELECT {DISTINCT_KEY}, array_agg(number) AS numbers, array_agg(n) AS counts
FROM counted GROUP BY {DISTINCT_KEY}
"""


async def write_distinct(conn: asyncpg.Connection, partition: str) -> int:
    """The days each customer is in a distinct set of (``metrics_customer_days``), and every
    distinct row of one month's minutes (a month holds its hours and days): the
    numbers of a row and each one's visits or orders gathered in Postgres, made bitmaps and
    encoded by ``distinct.dumps`` (a purchasers row's ``repeat_purchasers`` too, when someone
    in it has two or more orders: the write path writes that row only then), copied into
    ``kpi_distinct``; how many rows."""
    await tune(conn)
    await conn.execute(
        "INSERT INTO metrics_customer_days (number, day) "
        "SELECT DISTINCT k.number, CAST(m.bucket_start AS date) "
        f"FROM load_members_{partition} AS m JOIN metrics_customer_numbers AS k USING (customer_id)"
    )
    batch: list[tuple[Any, ...]] = []
    written = 0
    columns = ["grain", "bucket_start", "metric", "source", "channel", "members"]
    query = _DISTINCT.replace("{partition}", partition)
    async with conn.transaction():
        async for row in conn.cursor(query, ANY, prefetch=20000):
            grain, start, metric, source, channel = row[:5]
            batch.append((*row[:5], distinct.dumps(BitMap(row["numbers"]))))
            if metric == "purchasers":
                twice = BitMap(
                    n for n, c in zip(row["numbers"], row["counts"], strict=True) if c >= 2
                )
                if twice:
                    repeat = (grain, start, "repeat_purchasers", source, channel)
                    batch.append((*repeat, distinct.dumps(twice)))
            if len(batch) >= 20000:
                await conn.copy_records_to_table("kpi_distinct", records=batch, columns=columns)
                written += len(batch)
                batch = []
    if batch:
        await conn.copy_records_to_table("kpi_distinct", records=batch, columns=columns)
        written += len(batch)
    return written


async def finish(conn: asyncpg.Connection) -> None:
    """After :func:`sum_buckets` and :func:`write_distinct` of every partition: the all-time
    totals, the staged cohorts and stages summed, every written day's and hour's counter set
    to 1 (then :func:`add_key` for each of :func:`dropped_keys`, and :func:`cleanup`)."""
    await tune(conn)
    await conn.execute(
        f"INSERT INTO kpi_rollups (grain, bucket_start, {VALUE_KEY}, value) "
        f"SELECT 'all', TIMESTAMPTZ '1970-01-01 00:00:00+00', {VALUE_KEY}, sum(value) "
        f"FROM kpi_rollups WHERE grain = 'day' GROUP BY {VALUE_KEY} ORDER BY {VALUE_KEY}"
    )
    await conn.execute(
        "INSERT INTO kpi_cohorts (period, cohort, periods_since, customers) "
        "SELECT period, cohort, periods_since, sum(customers) FROM load_cohorts "
        "GROUP BY period, cohort, periods_since ORDER BY period, cohort, periods_since"
    )
    await conn.execute(
        "INSERT INTO stage_counts (stage, customers) SELECT stage, sum(customers) "
        "FROM load_stages GROUP BY stage HAVING sum(customers) <> 0 ORDER BY stage"
    )
    # a minute written makes its hour and day rollup (increments) or distinct rows (ids)
    for table, column, grain, start in (
        ("kpi_day_versions", "day", "day", "CAST(bucket_start AS date)"),
        ("kpi_hour_versions", "hour", "hour", "bucket_start"),
    ):
        await conn.execute(
            f"INSERT INTO {table} ({column}, version) SELECT {start}, 1 FROM ("
            f"SELECT bucket_start FROM kpi_rollups WHERE grain = '{grain}' "
            f"UNION SELECT bucket_start FROM kpi_distinct WHERE grain = '{grain}') AS w"
        )


async def dropped_keys(conn: asyncpg.Connection) -> list[tuple[str, str, str]]:
    """The primary keys :func:`prepare` dropped: table, name, definition."""
    return [tuple(r) for r in await conn.fetch("SELECT tbl, name, definition FROM load_keys")]


async def add_key(conn: asyncpg.Connection, table: str, name: str, definition: str) -> None:
    await tune(conn)
    await conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")


async def cleanup(conn: asyncpg.Connection) -> None:
    """Drop the staging tables; fresh statistics (after the keys are built)."""
    for staging in STAGING:
        await conn.execute(f"DROP TABLE {staging}")
    await conn.execute("ANALYZE")


async def finish_all(conn: asyncpg.Connection, start: date, end: date) -> None:
    """Every step of the summing on one connection (the tests; the bench runs the months side
    by side)."""
    for partition in partitions(start, end):
        await sum_buckets(conn, partition)
        await write_distinct(conn, partition)
    await finish(conn)
    for key in await dropped_keys(conn):
        await add_key(conn, *key)
    await cleanup(conn)
