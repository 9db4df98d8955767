"""Erasure and anonymisation of a customer, and the tombstones that remember erasures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import Text, delete, func, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_infra.schema import (
    customer_events,
    customers,
    erasures,
    identity_links,
    processed_events,
    stage_transitions,
)


async def erase_customer(
    conn: AsyncConnection, customer_id: str, hasher: Callable[[str], str]
) -> bool:
    """Delete every row about the customer and its linked anonymous ids; remember their hashes."""
    anon_rows = await conn.execute(
        delete(identity_links)
        .where(identity_links.c.customer_id == customer_id)
        .returning(identity_links.c.anonymous_id)
    )
    ids = [customer_id, *(r.anonymous_id for r in anon_rows)]
    await conn.execute(delete(identity_links).where(identity_links.c.anonymous_id.in_(ids)))
    existed = await conn.execute(delete(customers).where(customers.c.customer_id.in_(ids)))
    await conn.execute(delete(stage_transitions).where(stage_transitions.c.customer_id.in_(ids)))
    await conn.execute(delete(customer_events).where(customer_events.c.customer_id.in_(ids)))
    await conn.execute(delete(processed_events).where(processed_events.c.customer_id.in_(ids)))
    stmt = insert(erasures).values([{"customer_hash": hasher(i), "keyed": True} for i in ids])
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=["customer_hash"], set_={"erased_at": func.now()})
    )
    return bool(existed.rowcount)


async def sealed_subjects(conn: AsyncConnection, customer_ids: Sequence[str]) -> set[str]:
    """Every subject whose data key sealed one of these customers' stored events (a merged
    profile's events keep the key of the profile they came under)."""
    subject = (
        func.convert_from(customer_events.c.payload, literal("UTF8"))
        .cast(JSONB)["sealed"]["subject"]
        .astext
    )
    rows = await conn.execute(
        select(subject)
        .distinct()
        .where(customer_events.c.customer_id.in_(customer_ids), subject.is_not(None))
    )
    return {r[0] for r in rows}


async def anonymise_customer(conn: AsyncConnection, customer_id: str, pseudonym: str) -> bool:
    """Keep the facts and history under a pseudonym; drop raw events and id links."""
    moved = await conn.execute(
        update(customers)
        .where(customers.c.customer_id == customer_id)
        .values(customer_id=pseudonym)
    )
    if not moved.rowcount:
        return False
    await conn.execute(
        update(stage_transitions)
        .where(stage_transitions.c.customer_id == customer_id)
        .values(customer_id=pseudonym)
    )
    # the event log is the events' dedupe claim: keep the claims (under the pseudonym) as
    # processed_events rows, so a redelivery of these events changes nothing
    await conn.execute(
        insert(processed_events)
        .from_select(
            ["source", "event_id", "customer_id"],
            select(
                customer_events.c.source,
                customer_events.c.event_id,
                literal(pseudonym, Text),
            ).where(customer_events.c.customer_id == customer_id),
        )
        .on_conflict_do_nothing()
    )
    await conn.execute(delete(customer_events).where(customer_events.c.customer_id == customer_id))
    await conn.execute(
        delete(identity_links).where(
            (identity_links.c.customer_id == customer_id)
            | (identity_links.c.anonymous_id == customer_id)
        )
    )
    await conn.execute(
        update(processed_events)
        .where(processed_events.c.customer_id == customer_id)
        .values(customer_id=pseudonym)
    )
    return True


async def lock_bare_tombstones(conn: AsyncConnection) -> list[tuple[str, datetime]]:
    """Tombstones of older versions (a bare SHA-256, not keyed), locked; (hash, erased at)."""
    rows = await conn.execute(
        select(erasures.c.customer_hash, erasures.c.erased_at)
        .where(erasures.c.keyed.is_(False))
        .with_for_update(skip_locked=True)
    )
    return [(old, at) for old, at in rows.all()]


async def rekey_tombstones(
    conn: AsyncConnection, rehashed: Sequence[tuple[str, str, datetime]]
) -> None:
    """Replace bare tombstones by keyed ones: (bare hash, keyed hash, erased at) each. A keyed
    row that exists already (erased again by a newer engine) is kept."""
    if not rehashed:
        return
    await conn.execute(
        insert(erasures).on_conflict_do_nothing(index_elements=["customer_hash"]),
        [{"customer_hash": new, "erased_at": at, "keyed": True} for _, new, at in rehashed],
    )
    await conn.execute(
        delete(erasures).where(
            erasures.c.keyed.is_(False),
            erasures.c.customer_hash.in_([old for old, _, _ in rehashed]),
        )
    )
