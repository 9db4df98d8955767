"""Customers' consent per purpose (``customer_consent``): the latest consent event of each
customer and purpose, written with a batch, moved by merges, deleted by erasures."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_domain.consent import ConsentRow
from clm_infra.consent_schema import customer_consent

_COLUMNS = "customer_id, purpose, granted, at, source, event_id"
# an existing row is replaced only by a later consent in event order (time, source, id): an
# older event arriving late, or the same one again, changes nothing
_LATEST_WINS = (
    "ON CONFLICT (customer_id, purpose) DO UPDATE SET granted = EXCLUDED.granted,"
    " at = EXCLUDED.at, source = EXCLUDED.source, event_id = EXCLUDED.event_id"
    " WHERE (EXCLUDED.at, EXCLUDED.source, EXCLUDED.event_id)"
    " > (customer_consent.at, customer_consent.source, customer_consent.event_id)"
)
_RECORD = text(
    f"INSERT INTO customer_consent ({_COLUMNS}) SELECT * FROM unnest("
    "CAST(:customers AS text[]), CAST(:purposes AS text[]), CAST(:granted AS boolean[]),"
    " CAST(:ats AS timestamptz[]), CAST(:sources AS text[]), CAST(:event_ids AS text[]))"
    f" {_LATEST_WINS}"
)
# each profile's rows deleted and given to the customer it goes into (per customer and
# purpose the latest of them, then the latest of that and the customer's own)
_MOVE = text(
    "WITH pairs AS (SELECT * FROM unnest(CAST(:froms AS text[]), CAST(:intos AS text[]))"
    " AS p(src, dst)), gone AS (DELETE FROM customer_consent c USING pairs p"
    " WHERE c.customer_id = p.src"
    " RETURNING p.dst, c.purpose, c.granted, c.at, c.source, c.event_id)"
    f" INSERT INTO customer_consent ({_COLUMNS})"
    " SELECT DISTINCT ON (dst, purpose) dst, purpose, granted, at, source, event_id FROM gone"
    " ORDER BY dst, purpose, at DESC, source DESC, event_id DESC"
    f" {_LATEST_WINS}"
)


async def record_consents(conn: AsyncConnection, rows: Sequence[ConsentRow]) -> None:
    """Each row (at most one per customer and purpose) kept unless a later one is stored."""
    if not rows:
        return
    await conn.execute(
        _RECORD,
        {
            "customers": [r.customer_id for r in rows],
            "purposes": [r.purpose for r in rows],
            "granted": [r.granted for r in rows],
            "ats": [r.at for r in rows],
            "sources": [r.source for r in rows],
            "event_ids": [r.event_id for r in rows],
        },
    )


async def move_consents(conn: AsyncConnection, moves: Collection[tuple[str, str]]) -> None:
    """Each (profile, customer): the profile's consent goes to the customer, the latest per
    purpose winning."""
    if not moves:
        return
    pairs = sorted(moves)
    await conn.execute(
        _MOVE, {"froms": [src for src, _ in pairs], "intos": [dst for _, dst in pairs]}
    )


async def forget_consents(conn: AsyncConnection, ids: Collection[str]) -> None:
    """The consent of these ids deleted (an erased or anonymised customer is no longer
    someone to ask)."""
    if ids:
        await conn.execute(
            delete(customer_consent).where(customer_consent.c.customer_id.in_(sorted(ids)))
        )
