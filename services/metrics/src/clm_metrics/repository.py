"""All SQL of the metrics service. Repositories never commit."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from pyroaring import BitMap
from sqlalchemy import Table, and_, func, literal, or_, select, text, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_infra.schema import (
    kpi_buckets,
    kpi_cohorts,
    kpi_day_versions,
    kpi_distinct,
    kpi_hour_versions,
    kpi_rollups,
)
from clm_metrics import distinct
from clm_metrics.buckets import BucketKey, CohortRow, DistinctKey, Leaving
from clm_metrics.cohorts import Activity, cohort_changes
from clm_metrics.distinct import Distinct, NumberCache
from clm_metrics.tickets import LEVEL, TicketKey, TicketState
from clm_metrics.windows import EPOCH, Grain, Segment, floor_to

TotalsKey = tuple[str, str, str, str]
ROLLUP_GRAINS: tuple[Grain, ...] = ("hour", "day")
#: The source/channel of the distinct sets merged over every source or channel (a control
#: character no event's source or channel can contain), so a query reads one row a bucket.
ANY = "\x1fany"

_CLAIM = text(
    """
    INSERT INTO metrics_processed (record_id)
    SELECT * FROM unnest(CAST(:ids AS text[]))
    ON CONFLICT DO NOTHING
    RETURNING record_id
    """
)


async def claim_records(conn: AsyncConnection, record_ids: Sequence[str]) -> set[str]:
    """Mark lifecycle records as counted; return those not counted before.

    Array parameters, not a multi-row VALUES: the statement's text is the same for any number
    of records, so it is compiled and prepared once (a VALUES list of each length is a new
    statement to compile, parse and plan on every micro-batch).
    """
    if not record_ids:
        return set()
    result = await conn.execute(_CLAIM, {"ids": list(record_ids)})
    return {r.record_id for r in result}


def rollup(increments: Mapping[BucketKey, Decimal]) -> dict[tuple[str, BucketKey], Decimal]:
    """The minute increments summed per hour, per day and all time."""
    out: dict[tuple[str, BucketKey], Decimal] = {}
    for k, v in increments.items():
        for grain in (*ROLLUP_GRAINS, "all"):
            start = EPOCH if grain == "all" else floor_to(k.bucket_start, grain)  # type: ignore[arg-type]
            key = (grain, BucketKey(start, k.metric, k.source, k.channel, k.currency))
            out[key] = out.get(key, Decimal(0)) + v
    return out


_UPSERT_MINUTES = text(
    """
    INSERT INTO kpi_buckets AS t (bucket_start, metric, source, channel, currency, value)
    SELECT * FROM unnest(
        CAST(:b AS timestamptz[]), CAST(:m AS text[]), CAST(:s AS text[]),
        CAST(:ch AS text[]), CAST(:cu AS text[]), CAST(:v AS numeric[]))
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (bucket_start, metric, source, channel, currency)
    DO UPDATE SET value = t.value + EXCLUDED.value
    """
)
_UPSERT_ROLLUPS = text(
    """
    INSERT INTO kpi_rollups AS t (grain, bucket_start, metric, source, channel, currency, value)
    SELECT * FROM unnest(
        CAST(:g AS text[]), CAST(:b AS timestamptz[]), CAST(:m AS text[]), CAST(:s AS text[]),
        CAST(:ch AS text[]), CAST(:cu AS text[]), CAST(:v AS numeric[]))
    ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (grain, bucket_start, metric, source, channel, currency)
    DO UPDATE SET value = t.value + EXCLUDED.value
    """
)


def _columns(items: Sequence[tuple[BucketKey, Decimal]]) -> dict[str, list[Any]]:
    return {
        "b": [k.bucket_start for k, _ in items],
        "m": [k.metric for k, _ in items],
        "s": [k.source for k, _ in items],
        "ch": [k.channel for k, _ in items],
        "cu": [k.currency for k, _ in items],
        "v": [v for _, v in items],
    }


_BUMP_DAYS = text(
    """
    INSERT INTO kpi_day_versions AS t (day, version)
    SELECT d, 1 FROM unnest(CAST(:d AS date[])) AS d ORDER BY 1
    ON CONFLICT (day) DO UPDATE SET version = t.version + 1
    """
)
_BUMP_HOURS = text(
    """
    INSERT INTO kpi_hour_versions AS t (hour, version)
    SELECT h, 1 FROM unnest(CAST(:h AS timestamptz[])) AS h ORDER BY 1
    ON CONFLICT (hour) DO UPDATE SET version = t.version + 1
    """
)


async def bump_versions(conn: AsyncConnection, touched: Iterable[datetime]) -> None:
    """Count a write to the (UTC) days and hours of ``touched``, in the writer's transaction:
    readers keep a closed day's or hour's sums only while its version is unchanged."""
    hours = sorted({floor_to(at, "hour") for at in touched})
    if hours:
        await conn.execute(_BUMP_DAYS, {"d": sorted({floor_to(h, "day").date() for h in hours})})
        await conn.execute(_BUMP_HOURS, {"h": hours})


async def add_counts(
    conn: AsyncConnection,
    increments: Mapping[BucketKey, Decimal],
    members: Sequence[tuple[DistinctKey, str]] = (),
    *,
    leaving: Sequence[Leaving] = (),
    numbers: NumberCache | None = None,
) -> None:
    """What a batch adds: to the minute buckets and their rollups (one array upsert per
    table, rows in a stable order) and the customer numbers to the minute, hour and day
    distinct sets (rows locked in order, merged, written); then the profiles ``leaving``
    (erased, merged, anonymised) cleared from or moved in the distinct sets of the days they
    are in. One version bump, first, for every hour and day any of it touches (so writers that
    meet on a row meet first on its day's counter, locked in order). ``members``: one ``(key,
    customer id)`` per visit or order (ids numbered by :func:`customer_numbers`, with the
    ``numbers`` cache)."""
    cache = numbers if numbers is not None else NumberCache(0)
    survivors = [gone.into for gone in leaving if gone.into is not None]
    number = await customer_numbers(conn, [*(who for _, who in members), *survivors], cache)
    erased, moved, days = await _leaving_numbers(conn, leaving, number)
    if erased or moved:  # and the days this batch adds them to
        out = {*erased, *moved}
        days = sorted(
            {*days, *(floor_to(k.bucket_start, "day") for k, who in members if number[who] in out)}
        )
    touched = [k.bucket_start for k in increments]
    touched.extend(k.bucket_start for k, _ in members)
    # a rewritten day's every hour: readers keep closed hours (and minutes) by hour counters
    rewritten = [day + timedelta(hours=h) for day in days for h in range(24)]
    await bump_versions(conn, [*touched, *rewritten])
    if increments:
        await conn.execute(_UPSERT_MINUTES, _columns(sorted(increments.items())))
        rolled = sorted(rollup(increments).items())
        await conn.execute(
            _UPSERT_ROLLUPS,
            {"g": [g for (g, _), _ in rolled], **_columns([(k, v) for (_, k), v in rolled])},
        )
    if members:
        numbered = [(key, number[who]) for key, who in members]
        await _mark_days(conn, numbered)
        await _write_distinct(conn, distinct_rows(numbered))
    if leaving:
        await _remove(conn, days, erased, moved)
        await _forget(conn, leaving, cache)


_ADD_STAGE_COUNTS = text(
    """
    INSERT INTO stage_counts AS t (stage, customers)
    SELECT * FROM unnest(CAST(:s AS text[]), CAST(:n AS bigint[])) ORDER BY 1
    ON CONFLICT (stage) DO UPDATE SET customers = t.customers + EXCLUDED.customers
    """
)


async def add_stage_counts(conn: AsyncConnection, deltas: Mapping[str, int]) -> None:
    if not deltas:
        return
    ordered = sorted(deltas.items())
    await conn.execute(
        _ADD_STAGE_COUNTS, {"s": [s for s, _ in ordered], "n": [n for _, n in ordered]}
    )


_NUMBERS_KNOWN = text(
    """
    SELECT customer_id, number FROM metrics_customer_numbers
    WHERE customer_id = ANY(CAST(:ids AS text[]))
    """
)
_NUMBERS_NEW = text(
    """
    INSERT INTO metrics_customer_numbers (customer_id)
    SELECT * FROM unnest(CAST(:ids AS text[])) ORDER BY 1
    ON CONFLICT DO NOTHING
    RETURNING customer_id, number
    """
)


async def customer_numbers(
    conn: AsyncConnection, ids: Iterable[str], cache: NumberCache | None = None
) -> dict[str, int]:
    """Each id's number, new ids numbered in the caller's transaction.

    An identity sequence, not ``max + 1`` under a lock: replicas number at once without
    waiting on each other. Only ids not already numbered are inserted (``ON CONFLICT`` still
    draws a sequence value per row, so inserting known ids would thin the numbers out); when
    two replicas insert the same new id, the second waits for the first's row, skips it and
    reads it in the select after. Numbers drawn by a rolled-back batch are gaps, which Roaring
    bitmaps store at no cost. ``cache``: numbers read before (committed, so never taken back);
    numbers inserted here are not cached until read again after their transaction.
    """
    cache = cache if cache is not None else NumberCache(0)
    out: dict[str, int] = {}
    missing: list[str] = []
    for who in sorted(set(ids)):
        number = cache.get(who)
        if number is None:
            missing.append(who)
        else:
            out[who] = number
    if not missing:
        return out
    for who, number in await conn.execute(_NUMBERS_KNOWN, {"ids": missing}):
        out[who] = number
        cache.put(who, number)
    new = [who for who in missing if who not in out]
    if new:
        for who, number in await conn.execute(_NUMBERS_NEW, {"ids": new}):
            out[who] = number
        raced = [who for who in new if who not in out]
        if raced:  # numbered by another replica since the first select
            for who, number in await conn.execute(_NUMBERS_KNOWN, {"ids": raced}):
                out[who] = number
    return out


_MARK_DAYS = text(
    """
    INSERT INTO metrics_customer_days (number, day)
    SELECT * FROM unnest(CAST(:n AS integer[]), CAST(:d AS date[])) ORDER BY 1, 2
    ON CONFLICT DO NOTHING
    """
)


async def _mark_days(conn: AsyncConnection, numbered: Sequence[tuple[DistinctKey, int]]) -> None:
    pairs = sorted({(n, floor_to(k.bucket_start, "day").date()) for k, n in numbered})
    await conn.execute(_MARK_DAYS, {"n": [n for n, _ in pairs], "d": [d for _, d in pairs]})


_DAYS_OF = text(
    """
    SELECT DISTINCT day FROM metrics_customer_days WHERE number = ANY(CAST(:n AS integer[]))
    """
)


async def _leaving_numbers(
    conn: AsyncConnection, leaving: Sequence[Leaving], number: Mapping[str, int]
) -> tuple[list[int], dict[int, int], list[datetime]]:
    """The numbers of the erased profiles, the merged ones with their final survivor's
    number (a merge into a profile merged later in the batch follows the chain), and the
    starts of the days they are in. Profiles never counted have no number: nothing to do."""
    if not leaving:
        return [], {}, []
    known = {
        who: n
        for who, n in await conn.execute(
            _NUMBERS_KNOWN, {"ids": sorted({gone.who for gone in leaving})}
        )
    }
    into = {gone.who: gone.into for gone in leaving if gone.into is not None}

    def final(who: str) -> str:
        seen = {who}
        while who in into and into[who] not in seen:
            who = into[who]
            seen.add(who)
        return who

    erased = [
        known[g.who] for g in leaving if g.into is None and g.pseudonym is None and g.who in known
    ]
    moved = {
        known[g.who]: number[final(g.into)]
        for g in leaving
        if g.into is not None and g.who in known and known[g.who] != number[final(g.into)]
    }
    if not erased and not moved:
        return [], {}, []
    rows = await conn.execute(_DAYS_OF, {"n": sorted({*erased, *moved})})
    days = sorted(datetime.combine(day, time(), UTC) for (day,) in rows)
    return erased, moved, days


_DISTINCT_OF_DAYS = text(
    """
    SELECT k.grain, k.bucket_start, k.metric, k.source, k.channel, k.members
    FROM kpi_distinct AS k
    JOIN unnest(CAST(:d AS timestamptz[])) AS d(start)
      ON k.bucket_start >= d.start AND k.bucket_start < d.start + interval '1 day'
    WHERE k.grain IN ('minute', 'hour', 'day')
    ORDER BY 1, 2, 3, 4, 5
    FOR UPDATE OF k
    """
)
_MOVE_DAYS = text(
    """
    INSERT INTO metrics_customer_days (number, day)
    SELECT u.survivor, d.day FROM metrics_customer_days AS d
    JOIN unnest(CAST(:old AS integer[]), CAST(:new AS integer[])) AS u(old, survivor)
      ON d.number = u.old
    ORDER BY 1, 2
    ON CONFLICT DO NOTHING
    """
)
_DROP_NUMBERS = (
    text("DELETE FROM metrics_customer_days WHERE number = ANY(CAST(:n AS integer[]))"),
    text("DELETE FROM metrics_customer_numbers WHERE number = ANY(CAST(:n AS integer[]))"),
)


async def _remove(
    conn: AsyncConnection, days: Sequence[datetime], erased: Sequence[int], moved: Mapping[int, int]
) -> None:
    """Clear the erased numbers and move the merged ones to their survivors in every distinct
    row of their days (rows locked in key order); the merged profiles' days go to their
    survivors, and the numbers of both (and the ids behind them) are dropped."""
    if not days:
        return
    buckets: dict[tuple[str, datetime, str, str], dict[str, BitMap]] = {}
    for g, b, m, s, ch, blob in await conn.execute(_DISTINCT_OF_DAYS, {"d": list(days)}):
        buckets.setdefault((g, b, s, ch), {})[m] = distinct.loads(blob)
    changed: dict[DistinctRow, BitMap] = {}
    for (g, b, s, ch), sets in buckets.items():
        if "purchasers" in sets:
            sets.setdefault("repeat_purchasers", BitMap())
        for metric in distinct.remove_and_move(sets, erased, moved):
            changed[(g, b, metric, s, ch)] = sets[metric]
    if changed:
        written = sorted(changed)
        await conn.execute(
            _DISTINCT_WRITE,
            {**_row_columns(written), "r": [distinct.dumps(changed[r]) for r in written]},
        )
    old = sorted(moved)
    if old:
        await conn.execute(_MOVE_DAYS, {"old": old, "new": [moved[n] for n in old]})
    for statement in _DROP_NUMBERS:
        await conn.execute(statement, {"n": sorted({*erased, *moved})})


_RENAME = text(
    """
    UPDATE metrics_customer_numbers SET customer_id = :pseudonym WHERE customer_id = :who
    """
)


async def _forget(conn: AsyncConnection, leaving: Sequence[Leaving], cache: NumberCache) -> None:
    """Drop the leaving ids from the number cache; an anonymised id's number stays, under its
    pseudonym."""
    for gone in leaving:
        cache.forget(gone.who)
        if gone.pseudonym is not None:
            await conn.execute(_RENAME, {"who": gone.who, "pseudonym": gone.pseudonym})


_LOCK_TICKETS = text(
    """
    SELECT customer_id, ticket_id, opened_at, solved_at, source, channel
    FROM metrics_tickets
    WHERE (customer_id, ticket_id) IN (
            SELECT * FROM unnest(CAST(:c AS text[]), CAST(:t AS text[])))
       OR customer_id = ANY(CAST(:who AS text[]))
    ORDER BY 1, 2
    FOR UPDATE
    """
)
_UPSERT_TICKETS = text(
    """
    INSERT INTO metrics_tickets AS t
        (customer_id, ticket_id, opened_at, solved_at, source, channel)
    SELECT * FROM unnest(CAST(:c AS text[]), CAST(:t AS text[]), CAST(:o AS timestamptz[]),
                         CAST(:s AS timestamptz[]), CAST(:src AS text[]), CAST(:ch AS text[]))
    ORDER BY 1, 2
    ON CONFLICT (customer_id, ticket_id) DO UPDATE SET
        opened_at = EXCLUDED.opened_at, solved_at = EXCLUDED.solved_at,
        source = EXCLUDED.source, channel = EXCLUDED.channel
    """
)
_DELETE_TICKETS = text(
    """
    DELETE FROM metrics_tickets
    WHERE (customer_id, ticket_id) IN (
        SELECT * FROM unnest(CAST(:c AS text[]), CAST(:t AS text[])))
    """
)


async def lock_tickets(
    conn: AsyncConnection, keys: Iterable[TicketKey], customers: Iterable[str] = ()
) -> dict[TicketKey, TicketState]:
    """The stored states of the tickets ``keys`` and of every ticket of ``customers`` (profiles
    leaving), rows locked in key order."""
    wanted = sorted(set(keys))
    who = sorted(set(customers))
    if not wanted and not who:
        return {}
    rows = await conn.execute(
        _LOCK_TICKETS,
        {"c": [c for c, _ in wanted], "t": [t for _, t in wanted], "who": who},
    )
    return {(c, t): TicketState(opened, solved, src, ch) for c, t, opened, solved, src, ch in rows}


async def write_tickets(
    conn: AsyncConnection, states: Mapping[TicketKey, TicketState | None]
) -> None:
    """Write the changed ticket states (``None``: the row goes)."""
    kept = sorted((k, s) for k, s in states.items() if s is not None)
    gone = sorted(k for k, s in states.items() if s is None)
    if kept:
        await conn.execute(
            _UPSERT_TICKETS,
            {
                "c": [k[0] for k, _ in kept],
                "t": [k[1] for k, _ in kept],
                "o": [s.opened_at for _, s in kept],
                "s": [s.solved_at for _, s in kept],
                "src": [s.source for _, s in kept],
                "ch": [s.channel for _, s in kept],
            },
        )
    if gone:
        await conn.execute(_DELETE_TICKETS, {"c": [c for c, _ in gone], "t": [t for _, t in gone]})


DistinctRow = tuple[str, datetime, str, str, str]


def distinct_rows(members: Iterable[tuple[DistinctKey, int]]) -> dict[DistinctRow, Counter[int]]:
    """Each distinct row's new members (``(grain, start, metric, source, channel)``), counted
    (a purchaser's orders): a minute bucket's members go to its minute, hour and day, each also
    merged over every source, every channel and both."""
    per_row: dict[DistinctRow, Counter[int]] = {}
    for k, number in members:
        for grain in ("minute", *ROLLUP_GRAINS):
            start = floor_to(k.bucket_start, grain)
            for source, channel in (
                (k.source, k.channel),
                (k.source, ANY),
                (ANY, k.channel),
                (ANY, ANY),
            ):
                row = (grain, start, k.metric, source, channel)
                per_row.setdefault(row, Counter())[number] += 1
    return per_row


def _row_columns(rows: Sequence[DistinctRow]) -> dict[str, list[Any]]:
    return {name: [r[i] for r in rows] for i, name in enumerate(("g", "b", "m", "s", "ch"))}


_ROW_KEYS = """unnest(CAST(:g AS text[]), CAST(:b AS timestamptz[]), CAST(:m AS text[]),
    CAST(:s AS text[]), CAST(:ch AS text[]))"""
_DISTINCT_INIT = text(
    f"""
    INSERT INTO kpi_distinct (grain, bucket_start, metric, source, channel, members)
    SELECT u.*, CAST(:empty AS bytea) FROM {_ROW_KEYS} AS u
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT DO NOTHING
    """
)
_DISTINCT_LOCK = text(
    f"""
    SELECT k.grain, k.bucket_start, k.metric, k.source, k.channel, k.members
    FROM kpi_distinct AS k JOIN {_ROW_KEYS} AS u(g, b, m, s, ch)
      ON (k.grain, k.bucket_start, k.metric, k.source, k.channel) = (u.g, u.b, u.m, u.s, u.ch)
    ORDER BY 1, 2, 3, 4, 5
    FOR UPDATE OF k
    """
)
_DISTINCT_WRITE = text(
    """
    INSERT INTO kpi_distinct AS k (grain, bucket_start, metric, source, channel, members)
    SELECT * FROM unnest(CAST(:g AS text[]), CAST(:b AS timestamptz[]), CAST(:m AS text[]),
                         CAST(:s AS text[]), CAST(:ch AS text[]), CAST(:r AS bytea[]))
    ON CONFLICT (grain, bucket_start, metric, source, channel)
    DO UPDATE SET members = EXCLUDED.members
    """
)


def _repeat_row(row: DistinctRow) -> DistinctRow:
    return (row[0], row[1], "repeat_purchasers", row[3], row[4])


async def _write_distinct(
    conn: AsyncConnection, per_row: Mapping[DistinctRow, Counter[int]]
) -> None:
    """Merge the new members into their rows. The visitors and purchasers rows are created
    (empty) and locked in key order; a purchasers row's lock also guards its bucket's
    ``repeat_purchasers`` row (read with it, written only by whoever holds it), which is
    written only when someone in it has two or more orders."""
    if not per_row:
        return
    keys = sorted(per_row)
    await conn.execute(_DISTINCT_INIT, {**_row_columns(keys), "empty": distinct.dumps(BitMap())})
    repeats = [_repeat_row(r) for r in keys if r[2] == "purchasers"]
    sets: dict[DistinctRow, BitMap] = {}
    for g, b, m, s, ch, blob in await conn.execute(
        _DISTINCT_LOCK, _row_columns(sorted([*keys, *repeats]))
    ):
        sets[(g, b, m, s, ch)] = distinct.loads(blob)
    changed: dict[DistinctRow, BitMap] = {}
    for row in keys:
        members = sets[row]
        if row[2] == "purchasers":
            repeat = sets.get(_repeat_row(row), BitMap())
            grew, grew_repeat = distinct.add_orders(members, repeat, per_row[row])
            if grew_repeat:
                changed[_repeat_row(row)] = repeat
        else:
            grew = distinct.add_visitors(members, per_row[row])
        if grew:  # ids seen before leave a row's bytes as they are: no new row version
            changed[row] = members
    if changed:
        written = sorted(changed)
        await conn.execute(
            _DISTINCT_WRITE,
            {**_row_columns(written), "r": [distinct.dumps(changed[r]) for r in written]},
        )


_LOCK_COHORT_ACTIVITY = text(
    """
    SELECT a.period, a.customer_id, a.period_start, a.purchases, a.cohort
    FROM metrics_cohort_activity AS a
    JOIN unnest(CAST(:p AS text[]), CAST(:c AS text[]), CAST(:s AS date[])) AS k(p, c, s)
      ON a.period = k.p AND a.customer_id = k.c AND a.period_start = k.s
    ORDER BY 1, 2, 3
    FOR UPDATE OF a
    """
)
_WRITE_COHORT_ACTIVITY = text(
    """
    INSERT INTO metrics_cohort_activity AS t (period, customer_id, period_start, purchases, cohort)
    SELECT * FROM unnest(CAST(:p AS text[]), CAST(:c AS text[]), CAST(:s AS date[]),
                         CAST(:n AS integer[]), CAST(:k AS date[]))
    ON CONFLICT (period, customer_id, period_start)
    DO UPDATE SET purchases = EXCLUDED.purchases, cohort = EXCLUDED.cohort
    """
)
_DROP_COHORT_ACTIVITY = text(
    """
    DELETE FROM metrics_cohort_activity AS a
    USING unnest(CAST(:p AS text[]), CAST(:c AS text[]), CAST(:s AS date[])) AS k(p, c, s)
    WHERE a.period = k.p AND a.customer_id = k.c AND a.period_start = k.s
    """
)
_ADD_COHORTS = text(
    """
    INSERT INTO kpi_cohorts AS t (period, cohort, periods_since, customers)
    SELECT * FROM unnest(
        CAST(:p AS text[]), CAST(:c AS date[]), CAST(:n AS integer[]), CAST(:v AS bigint[]))
    ORDER BY 1, 2, 3
    ON CONFLICT (period, cohort, periods_since)
    DO UPDATE SET customers = t.customers + EXCLUDED.customers
    """
)


_RENAME_COHORT_ACTIVITY = text(
    """
    UPDATE metrics_cohort_activity SET customer_id = :pseudonym WHERE customer_id = :who
    """
)


async def rename_cohort_activity(conn: AsyncConnection, leaving: Sequence[Leaving]) -> None:
    """An anonymised profile's cohort activity goes on under its pseudonym (so the id, should
    it come back, starts afresh)."""
    for gone in leaving:
        if gone.pseudonym is not None:
            await conn.execute(
                _RENAME_COHORT_ACTIVITY, {"who": gone.who, "pseudonym": gone.pseudonym}
            )


async def add_cohort_activity(conn: AsyncConnection, rows: Sequence[CohortRow]) -> None:
    """``(period, customer, period_start, cohort, +1/-1)``: each customer counts once in a
    period while it has purchases there (restatements take purchases back)."""
    if not rows:
        return
    keys = sorted({(p, who, start) for p, who, start, _, _ in rows})
    found = await conn.execute(
        _LOCK_COHORT_ACTIVITY,
        {"p": [k[0] for k in keys], "c": [k[1] for k in keys], "s": [k[2] for k in keys]},
    )
    known = {(p, c, s): Activity(int(n), k) for p, c, s, n, k in found}
    states, counts = cohort_changes(known, rows)
    kept = sorted((k, a) for k, a in states.items() if a is not None)
    gone = sorted(k for k, a in states.items() if a is None and k in known)
    if kept:
        await conn.execute(
            _WRITE_COHORT_ACTIVITY,
            {
                "p": [k[0] for k, _ in kept],
                "c": [k[1] for k, _ in kept],
                "s": [k[2] for k, _ in kept],
                "n": [a.purchases for _, a in kept],
                "k": [a.cohort for _, a in kept],
            },
        )
    if gone:
        await conn.execute(
            _DROP_COHORT_ACTIVITY,
            {"p": [k[0] for k in gone], "c": [k[1] for k in gone], "s": [k[2] for k in gone]},
        )
    if not counts:
        return
    ordered = sorted(counts.items())
    await conn.execute(
        _ADD_COHORTS,
        {
            "p": [p for (p, _, _), _ in ordered],
            "c": [c for (_, c, _), _ in ordered],
            "n": [n for (_, _, n), _ in ordered],
            "v": [v for _, v in ordered],
        },
    )


def _filtered(table: Table, source: str | None, channel: str | None) -> list[Any]:
    where = []
    if source is not None:
        where.append(table.c.source == source)
    if channel is not None:
        where.append(table.c.channel == channel)
    return where


#: What the all-time totals are read for: current stages, open tickets, historical CLV.
ALL_TIME_METRICS = ("customer_revenue", "new_customers", LEVEL)
#: Metrics summed up to an instant for a level there (besides the flows: stage counts).
LEVEL_METRICS = (LEVEL,)
#: ``levels``: the flows and the level metrics (what a window's end is read with).
Metrics = Literal["every", "levels", "all_time"]


def is_all_time_metric(metric: str) -> bool:
    return metric.startswith("flow:") or metric in ALL_TIME_METRICS


def is_level_metric(metric: str) -> bool:
    return metric.startswith("flow:") or metric in LEVEL_METRICS


def _metric_filter(table: Table, metrics: Metrics) -> list[Any]:
    if metrics == "levels":
        return [or_(table.c.metric.like("flow:%"), table.c.metric.in_(LEVEL_METRICS))]
    if metrics == "all_time":
        return [or_(table.c.metric.like("flow:%"), table.c.metric.in_(ALL_TIME_METRICS))]
    return []


def _segment_select(
    segment: Segment,
    source: str | None,
    channel: str | None,
    metrics: Metrics = "every",
    part: int = 0,
) -> Any:
    table = kpi_buckets if segment.grain == "minute" else kpi_rollups
    c = table.c
    query = select(
        literal(part).label("part"), c.metric, c.source, c.channel, c.currency, c.value
    ).where(
        c.bucket_start >= segment.start,
        c.bucket_start < segment.end,
        *_filtered(table, source, channel),
    )
    if segment.grain != "minute":
        query = query.where(c.grain == segment.grain)
    return query.where(*_metric_filter(table, metrics))


def _all_time_select(source: str | None, channel: str | None, part: int = 0) -> Any:
    c = kpi_rollups.c
    return select(
        literal(part).label("part"), c.metric, c.source, c.channel, c.currency, c.value
    ).where(
        c.grain == "all",
        c.bucket_start == EPOCH,
        *_metric_filter(kpi_rollups, "all_time"),
        *_filtered(kpi_rollups, source, channel),
    )


async def _summed(
    conn: AsyncConnection, selects: Sequence[Any], parts: int = 1
) -> list[dict[TotalsKey, Decimal]]:
    """The tagged selects summed by ``part`` and key, in one statement (one round trip)."""
    out: list[dict[TotalsKey, Decimal]] = [{} for _ in range(parts)]
    if not selects:
        return out
    rows: Any = union_all(*selects) if len(selects) > 1 else selects[0]
    c = rows.subquery().c
    query = select(c.part, c.metric, c.source, c.channel, c.currency, func.sum(c.value)).group_by(
        c.part, c.metric, c.source, c.channel, c.currency
    )
    for part, m, s, ch, cu, v in await conn.execute(query):
        out[part][(m, s, ch, cu)] = Decimal(v)
    return out


async def range_totals(
    conn: AsyncConnection,
    segments: Sequence[Segment],
    *,
    source: str | None = None,
    channel: str | None = None,
    metrics: Metrics = "every",
) -> dict[TotalsKey, Decimal]:
    """Sums over the planned segments, by (metric, source, channel, currency)."""
    selects = [_segment_select(s, source, channel, metrics) for s in segments]
    return (await _summed(conn, selects))[0]


async def all_time_totals(
    conn: AsyncConnection, *, source: str | None = None, channel: str | None = None
) -> dict[TotalsKey, Decimal]:
    return (await _summed(conn, [_all_time_select(source, channel)]))[0]


async def window_totals(
    conn: AsyncConnection,
    window: Sequence[Segment],
    after: Sequence[Segment],
    *,
    source: str | None = None,
    channel: str | None = None,
) -> tuple[dict[TotalsKey, Decimal], dict[TotalsKey, Decimal], dict[TotalsKey, Decimal]]:
    """In one statement: the sums over ``window``, the flows and levels over ``after`` and the
    all-time totals (what a window's KPIs read besides closed days and distinct sets)."""
    selects = [
        *(_segment_select(s, source, channel, "every", 0) for s in window),
        *(_segment_select(s, source, channel, "levels", 1) for s in after),
        _all_time_select(source, channel, 2),
    ]
    sums, flows_after, all_time = await _summed(conn, selects, 3)
    return sums, flows_after, all_time


async def merged_distinct(
    conn: AsyncConnection,
    segments: Sequence[Segment],
    metrics: Sequence[str],
    *,
    source: str | None = None,
    channel: str | None = None,
) -> Distinct:
    """The distinct sets over the segments (empty when ``metrics`` is)."""
    c = kpi_distinct.c
    if not segments or not metrics:
        return Distinct()
    wanted = [*metrics, "repeat_purchasers"] if "purchasers" in metrics else list(metrics)
    query = select(c.grain, c.bucket_start, c.metric, c.members).where(
        c.metric.in_(wanted),
        or_(
            *(
                and_(c.grain == s.grain, c.bucket_start >= s.start, c.bucket_start < s.end)
                for s in segments
            )
        ),
        c.source == (ANY if source is None else source),
        c.channel == (ANY if channel is None else channel),
    )
    rows = await conn.execute(query)
    return distinct.from_buckets(((g, b), m, distinct.loads(blob)) for g, b, m, blob in rows)


async def open_totals(
    conn: AsyncConnection,
    window: Sequence[Segment],
    after: Sequence[Segment],
    *,
    source: str | None = None,
    channel: str | None = None,
) -> tuple[dict[TotalsKey, Decimal], dict[TotalsKey, Decimal]]:
    """In one statement: every sum over ``window`` and the all-time metrics' (flows among
    them) over ``after``."""
    selects = [
        *(_segment_select(s, source, channel, "every", 0) for s in window),
        *(_segment_select(s, source, channel, "all_time", 1) for s in after),
    ]
    sums, later = await _summed(conn, selects, 2)
    return sums, later


async def all_time_and_since(
    conn: AsyncConnection,
    since: Sequence[Segment],
    *,
    source: str | None = None,
    channel: str | None = None,
) -> tuple[dict[TotalsKey, Decimal], dict[TotalsKey, Decimal]]:
    """In one statement (one snapshot): the all-time totals and the all-time metrics' sums over
    ``since``, so their difference is exactly what lies before it."""
    selects = [
        _all_time_select(source, channel, 0),
        *(_segment_select(s, source, channel, "all_time", 1) for s in since),
    ]
    all_time, later = await _summed(conn, selects, 2)
    return all_time, later


async def day_versions(conn: AsyncConnection, first: date, last: date) -> dict[date, int]:
    """The write counters of the days ``first`` … ``last`` (a day never written is absent)."""
    c = kpi_day_versions.c
    rows = await conn.execute(select(c.day, c.version).where(c.day >= first, c.day <= last))
    return {day: int(version) for day, version in rows}


async def hour_versions(
    conn: AsyncConnection, ranges: Sequence[tuple[datetime, datetime]]
) -> dict[datetime, int]:
    """The write counters of the hours in the ``[start, end)`` ranges (absent: never written)."""
    c = kpi_hour_versions.c
    if not ranges:
        return {}
    rows = await conn.execute(
        select(c.hour, c.version).where(or_(*(and_(c.hour >= a, c.hour < b) for a, b in ranges)))
    )
    return {hour: int(version) for hour, version in rows}


async def change_count(conn: AsyncConnection) -> int:
    """How many writes were counted, ever: the sum of the day counters (every write bumps the
    days it touches, and counters only grow and are never pruned)."""
    c = kpi_day_versions.c
    return int(await conn.scalar(select(func.coalesce(func.sum(c.version), 0))) or 0)


async def closed_version(
    conn: AsyncConnection, open_days: tuple[date, date], open_hours: tuple[datetime, datetime]
) -> tuple[int, int]:
    """Change counters of what a rolling window keeps, in one statement: the sum of the day
    counters outside the open days ``[first, end)`` (today and the days ahead) and of the hour
    counters in ``[today, current hour)``. Counters only grow, so any write to a day or hour
    they cover changes the pair."""
    d, h = kpi_day_versions.c, kpi_hour_versions.c
    days = (
        select(func.coalesce(func.sum(d.version), 0))
        .where(or_(d.day < open_days[0], d.day >= open_days[1]))
        .scalar_subquery()
    )
    hours = (
        select(func.coalesce(func.sum(h.version), 0))
        .where(h.hour >= open_hours[0], h.hour < open_hours[1])
        .scalar_subquery()
    )
    row = (await conn.execute(select(days, hours))).one()
    return int(row[0]), int(row[1])


async def cohorts(conn: AsyncConnection, period: str) -> list[tuple[date, int, int]]:
    c = kpi_cohorts.c
    rows = await conn.execute(
        select(c.cohort, c.periods_since, c.customers)
        .where(c.period == period, c.customers != 0)
        .order_by(c.cohort, c.periods_since)
    )
    return [(cohort, int(n), int(v)) for cohort, n, v in rows]


async def prune(conn: AsyncConnection, *, minutes_before: datetime, hours_before: datetime) -> int:
    """Drop minute buckets and distinct sets older than their retention (hours and days
    stay)."""
    n = 0
    for stmt in (
        kpi_buckets.delete().where(kpi_buckets.c.bucket_start < minutes_before),
        kpi_distinct.delete().where(
            kpi_distinct.c.grain == "minute", kpi_distinct.c.bucket_start < minutes_before
        ),
        kpi_rollups.delete().where(
            kpi_rollups.c.grain == "hour", kpi_rollups.c.bucket_start < hours_before
        ),
        kpi_distinct.delete().where(
            kpi_distinct.c.grain == "hour", kpi_distinct.c.bucket_start < hours_before
        ),
    ):
        n += (await conn.execute(stmt)).rowcount
    return n
