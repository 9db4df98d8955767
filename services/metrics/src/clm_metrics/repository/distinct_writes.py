"""The distinct sets' writes: customer numbers, the members a batch adds to the minute, hour
and day sets, and the profiles leaving them (erased, merged, anonymised)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time

from pyroaring import BitMap
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_metrics import distinct
from clm_metrics.distinct import NumberCache
from clm_metrics.members import DistinctKey, Leaving
from clm_metrics.repository.rows import DistinctRow, distinct_rows, repeat_row, row_columns
from clm_metrics.windows import floor_to

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


async def add_members(conn: AsyncConnection, numbered: Sequence[tuple[DistinctKey, int]]) -> None:
    """The numbered members (one per visit or order) into their customers' days and into the
    minute, hour and day distinct sets."""
    await _mark_days(conn, numbered)
    await _write_distinct(conn, distinct_rows(numbered))


async def _mark_days(conn: AsyncConnection, numbered: Sequence[tuple[DistinctKey, int]]) -> None:
    pairs = sorted({(n, floor_to(k.bucket_start, "day").date()) for k, n in numbered})
    await conn.execute(_MARK_DAYS, {"n": [n for n, _ in pairs], "d": [d for _, d in pairs]})


_DAYS_OF = text(
    """
    SELECT DISTINCT day FROM metrics_customer_days WHERE number = ANY(CAST(:n AS integer[]))
    """
)


@dataclass(frozen=True, slots=True)
class Leavers:
    """The numbers of the erased profiles, the merged ones with their final survivor's, and
    the starts of the days they are in."""

    erased: list[int] = field(default_factory=list)
    moved: dict[int, int] = field(default_factory=dict)
    days: list[datetime] = field(default_factory=list)


async def leaving_numbers(
    conn: AsyncConnection, leaving: Sequence[Leaving], number: Mapping[str, int]
) -> Leavers:
    """The profiles ``leaving``, numbered (a merge into a profile merged later in the batch
    follows the chain). Profiles never counted have no number: nothing to do."""
    if not leaving:
        return Leavers()
    rows = await conn.execute(_NUMBERS_KNOWN, {"ids": sorted({gone.who for gone in leaving})})
    known: dict[str, int] = {who: n for who, n in rows}
    erased = [
        known[g.who] for g in leaving if g.into is None and g.pseudonym is None and g.who in known
    ]
    moved = _moved(leaving, known, number)
    if not erased and not moved:
        return Leavers()
    rows = await conn.execute(_DAYS_OF, {"n": sorted({*erased, *moved})})
    days = sorted(datetime.combine(day, time(), UTC) for (day,) in rows)
    return Leavers(erased, moved, days)


def _moved(
    leaving: Sequence[Leaving], known: Mapping[str, int], number: Mapping[str, int]
) -> dict[int, int]:
    """The merged profiles' numbers, each with its final survivor's."""
    into = {gone.who: gone.into for gone in leaving if gone.into is not None}

    def final(who: str) -> str:
        seen = {who}
        while who in into and into[who] not in seen:
            who = into[who]
            seen.add(who)
        return who

    return {
        known[g.who]: number[final(g.into)]
        for g in leaving
        if g.into is not None and g.who in known and known[g.who] != number[final(g.into)]
    }


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


async def remove_leavers(conn: AsyncConnection, days: Sequence[datetime], leavers: Leavers) -> None:
    """Clear the erased numbers and move the merged ones to their survivors in every distinct
    row of ``days`` (rows locked in key order); the merged profiles' days go to their
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
        for metric in distinct.remove_and_move(sets, leavers.erased, leavers.moved):
            changed[(g, b, metric, s, ch)] = sets[metric]
    await _write_sets(conn, changed)
    old = sorted(leavers.moved)
    if old:
        await conn.execute(_MOVE_DAYS, {"old": old, "new": [leavers.moved[n] for n in old]})
    for statement in _DROP_NUMBERS:
        await conn.execute(statement, {"n": sorted({*leavers.erased, *leavers.moved})})


async def _write_sets(conn: AsyncConnection, changed: Mapping[DistinctRow, BitMap]) -> None:
    """The changed distinct rows, written whole (in key order)."""
    if changed:
        written = sorted(changed)
        await conn.execute(
            _DISTINCT_WRITE,
            {**row_columns(written), "r": [distinct.dumps(changed[r]) for r in written]},
        )


_RENAME = text(
    """
    UPDATE metrics_customer_numbers SET customer_id = :pseudonym WHERE customer_id = :who
    """
)


async def forget(conn: AsyncConnection, leaving: Sequence[Leaving], cache: NumberCache) -> None:
    """Drop the leaving ids from the number cache; an anonymised id's number stays, under its
    pseudonym."""
    for gone in leaving:
        cache.forget(gone.who)
        if gone.pseudonym is not None:
            await conn.execute(_RENAME, {"who": gone.who, "pseudonym": gone.pseudonym})


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
    await conn.execute(_DISTINCT_INIT, {**row_columns(keys), "empty": distinct.dumps(BitMap())})
    repeats = [repeat_row(r) for r in keys if r[2] == "purchasers"]
    sets: dict[DistinctRow, BitMap] = {}
    for g, b, m, s, ch, blob in await conn.execute(
        _DISTINCT_LOCK, row_columns(sorted([*keys, *repeats]))
    ):
        sets[(g, b, m, s, ch)] = distinct.loads(blob)
    await _write_sets(conn, _merged(sets, keys, per_row))


def _merged(
    sets: Mapping[DistinctRow, BitMap],
    keys: Sequence[DistinctRow],
    per_row: Mapping[DistinctRow, Counter[int]],
) -> dict[DistinctRow, BitMap]:
    """The rows the new members change, merged in place (ids seen before leave a row's bytes
    as they are: no new row version)."""
    changed: dict[DistinctRow, BitMap] = {}
    for row in keys:
        members = sets[row]
        if row[2] == "purchasers":
            repeat = sets.get(repeat_row(row), BitMap())
            grew, grew_repeat = distinct.add_orders(members, repeat, per_row[row])
            if grew_repeat:
                changed[repeat_row(row)] = repeat
        else:
            grew = distinct.add_visitors(members, per_row[row])
        if grew:
            changed[row] = members
    return changed
