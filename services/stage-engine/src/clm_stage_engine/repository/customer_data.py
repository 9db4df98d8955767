"""What is held about one customer, read back for its owner (the events listing and the
subject-access export): its stored events and stage transitions in keyset pages, its
anonymous ids, its segment membership spans and its data keys' dates (never the keys)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_infra.db import any_text
from clm_infra.privacy.schema import data_keys
from clm_infra.schema import customer_events, identity_links, stage_transitions
from clm_infra.segment_schema import segment_memberships as spans
from clm_infra.segment_schema import segments

#: Where an event sits in a customer's listing: (occurred_at, source, event_id).
EventKey = tuple[datetime, str, str]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of the event log: its place in the listing and the record value as stored."""

    key: EventKey
    payload: bytes


async def events_page(
    conn: AsyncConnection, customer_id: str, after: EventKey | None, limit: int
) -> list[StoredEvent]:
    """Up to ``limit`` of the customer's stored events after ``after``, oldest first (by
    occurred_at, then source and event id: a total order, so pages never skip or repeat)."""
    order = (customer_events.c.occurred_at, customer_events.c.source, customer_events.c.event_id)
    query = (
        select(*order, customer_events.c.payload)
        .where(customer_events.c.customer_id == customer_id)
        .order_by(*order)
        .limit(limit)
    )
    if after is not None:
        query = query.where(tuple_(*order) > tuple_(*after))
    rows = await conn.execute(query)
    return [StoredEvent((r.occurred_at, r.source, r.event_id), r.payload) for r in rows]


async def transitions_page(
    conn: AsyncConnection, customer_id: str, after: int | None, limit: int
) -> list[tuple[int, dict[str, Any]]]:
    """Up to ``limit`` of the customer's stage transitions after the one of id ``after``, in
    the order they were recorded: (id, transition)."""
    t = stage_transitions.c
    query = (
        select(t.id, t.from_stage, t.to_stage, t.at, t.event_id, t.reason)
        .where(t.customer_id == customer_id)
        .order_by(t.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(t.id > after)
    rows = await conn.execute(query)
    return [(r.id, {k: v for k, v in r._mapping.items() if k != "id"}) for r in rows]


async def anonymous_ids(conn: AsyncConnection, customer_id: str) -> list[dict[str, Any]]:
    """The anonymous ids linked to the customer: when, and by which event."""
    links = identity_links.c
    rows = await conn.execute(
        select(links.anonymous_id, links.linked_at, links.event_id)
        .where(links.customer_id == customer_id)
        .order_by(links.linked_at, links.anonymous_id)
    )
    return [dict(r._mapping) for r in rows]


async def membership_spans(conn: AsyncConnection, customer_id: str) -> list[dict[str, Any]]:
    """Every span of the customer in a segment (deleted segments too): the segment's id and
    name, the definition's version, entered and left (null: still a member), and the causes."""
    rows = await conn.execute(
        select(
            spans.c.segment_id,
            segments.c.name,
            spans.c.version,
            spans.c.entered_at,
            spans.c.entered_by,
            spans.c.left_at,
            spans.c.left_by,
        )
        .join(segments, segments.c.id == spans.c.segment_id)
        .where(spans.c.customer_id == customer_id)
        .order_by(spans.c.entered_at, spans.c.id)
    )
    return [dict(r._mapping) for r in rows]


async def key_dates(conn: AsyncConnection, subjects: Sequence[str]) -> dict[str, dict[str, Any]]:
    """When each of these subjects' data key was made and last re-wrapped (those that have
    one); never the key."""
    if not subjects:
        return {}
    rows = await conn.execute(
        select(data_keys.c.subject, data_keys.c.created_at, data_keys.c.rewrapped_at).where(
            data_keys.c.subject == any_text(sorted(set(subjects)))
        )
    )
    return {r.subject: {"created_at": r.created_at, "rewrapped_at": r.rewrapped_at} for r in rows}
