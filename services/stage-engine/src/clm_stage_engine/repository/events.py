"""The customers' event log, read back whole for a rebuild."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_domain.events import Event, parse_stored_event_json
from clm_infra.db import any_text
from clm_infra.schema import customer_events


async def load_events(conn: AsyncConnection, keys: Sequence[str]) -> dict[str, list[Event]]:
    """Every stored event of these customers (the input of a rebuild)."""
    if not keys:
        return {}
    rows = await conn.execute(
        select(customer_events.c.customer_id, customer_events.c.payload).where(
            customer_events.c.customer_id == any_text(sorted(set(keys)))
        )
    )
    out: dict[str, list[Event]] = {}
    for r in rows:
        out.setdefault(r.customer_id, []).append(parse_stored_event_json(r.payload))
    return out
