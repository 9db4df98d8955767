"""Per-ticket states and cohort activity: the rows a batch locks, changes and writes back."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_metrics.cohorts import Activity, ActivityKey, CohortRow, cohort_changes
from clm_metrics.members import Leaving
from clm_metrics.tickets import TicketKey, TicketState

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
    found = await conn.execute(_LOCK_COHORT_ACTIVITY, _activity_columns(keys))
    known = {(p, c, s): Activity(int(n), k) for p, c, s, n, k in found}
    states, counts = cohort_changes(known, rows)
    await _write_activity(conn, states, known)
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


def _activity_columns(keys: Sequence[ActivityKey]) -> dict[str, list[Any]]:
    return {"p": [k[0] for k in keys], "c": [k[1] for k in keys], "s": [k[2] for k in keys]}


async def _write_activity(
    conn: AsyncConnection,
    states: Mapping[ActivityKey, Activity | None],
    known: Mapping[ActivityKey, Activity],
) -> None:
    """The changed activity rows written, and those left without purchases deleted."""
    kept = sorted((k, a) for k, a in states.items() if a is not None)
    gone = sorted(k for k, a in states.items() if a is None and k in known)
    if kept:
        await conn.execute(
            _WRITE_COHORT_ACTIVITY,
            {
                **_activity_columns([k for k, _ in kept]),
                "n": [a.purchases for _, a in kept],
                "k": [a.cohort for _, a in kept],
            },
        )
    if gone:
        await conn.execute(_DROP_COHORT_ACTIVITY, _activity_columns(gone))
