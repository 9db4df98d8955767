"""Webhook subscriptions and their deliveries (rows the dispatcher works through).

A delivery to a ``marketing`` subscription about a customer whose latest marketing consent is
withdrawn is not queued (:mod:`clm_domain.consent`); each one left out is counted in
``clm_webhook_deliveries_skipped_total{reason="consent"}``, where the statement decides it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy import ColumnElement, and_, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_infra import subscription_secrets
from clm_infra.schema import webhook_deliveries, webhook_subscriptions


async def active_subscriptions(
    conn: AsyncConnection,
) -> list[tuple[int, list[str] | None, list[int] | None]]:
    """The active webhook subscriptions (id, stages wanted, segments wanted), as
    :func:`~clm_stage_engine.repository.batch.lookup_batch` reads them, for writers outside a
    batch (the sweeper, merges, erasures)."""
    rows = await conn.execute(
        select(
            webhook_subscriptions.c.id,
            webhook_subscriptions.c.stages,
            webhook_subscriptions.c.segments,
        ).where(webhook_subscriptions.c.active)
    )
    return [
        (
            int(sid),
            list(stages) if stages else None,
            [int(g) for g in segments] if segments else None,
        )
        for sid, stages, segments in rows
    ]


SKIPPED = Counter(
    "clm_webhook_deliveries_skipped_total",
    "Webhook deliveries not queued (consent: to a marketing subscription, about a customer "
    "who withdrew marketing consent)",
    ["reason"],
)

# The deliveries in the order given (their ids are the order they are sent in), less those
# to a marketing subscription about a customer (the payload's customer_id) whose latest
# marketing consent is withdrawn, read in the caller's transaction.
_ENQUEUE = text(
    "WITH d AS (SELECT * FROM unnest(CAST(:sids AS bigint[]), CAST(:payloads AS bytea[]))"
    " WITH ORDINALITY AS d(sid, payload, n)), queued AS ("
    " INSERT INTO webhook_deliveries (subscription_id, payload) SELECT d.sid, d.payload FROM d"
    " LEFT JOIN webhook_subscriptions s ON s.id = d.sid"
    " WHERE s.purpose IS DISTINCT FROM 'marketing' OR NOT EXISTS (SELECT 1"
    " FROM customer_consent c WHERE c.purpose = 'marketing' AND NOT c.granted"
    " AND c.customer_id = CAST(convert_from(d.payload, 'UTF8') AS jsonb) ->> 'customer_id')"
    " ORDER BY d.n RETURNING 1) SELECT count(*) FROM queued"
)


async def enqueue_deliveries(conn: AsyncConnection, rows: Sequence[tuple[int, bytes]]) -> int:
    """Queue the deliveries (subscription id, JSON payload naming its ``customer_id``) but
    those consent rules out; returns how many it left out."""
    if not rows:
        return 0
    found = await conn.execute(
        _ENQUEUE, {"sids": [sid for sid, _ in rows], "payloads": [p for _, p in rows]}
    )
    skipped = len(rows) - int(found.scalar_one())
    if skipped:
        SKIPPED.labels("consent").inc(skipped)
    return skipped


async def add_subscription(
    conn: AsyncConnection,
    url: str,
    sealed_secret: str,
    stages: list[str] | None,
    segments: list[int] | None = None,
    purpose: str = "marketing",
) -> int:
    """A new active subscription (to stage changes, or with ``segments`` to those segments'
    entries and exits) for ``purpose`` (marketing or service); its id."""
    sid = await conn.execute(
        insert(webhook_subscriptions)
        .values(url=url, secret=sealed_secret, stages=stages, segments=segments, purpose=purpose)
        .returning(webhook_subscriptions.c.id)
    )
    return int(sid.scalar_one())


async def list_subscriptions(conn: AsyncConnection) -> list[dict[str, Any]]:
    """The active subscriptions by id (id, url, stages, segments, purpose, created_at) with their
    delivery counts by status (``deliveries``)."""
    subs = (
        await conn.execute(
            select(
                webhook_subscriptions.c.id,
                webhook_subscriptions.c.url,
                webhook_subscriptions.c.stages,
                webhook_subscriptions.c.segments,
                webhook_subscriptions.c.purpose,
                webhook_subscriptions.c.created_at,
            )
            .where(webhook_subscriptions.c.active.is_(True))
            .order_by(webhook_subscriptions.c.id)
        )
    ).all()
    counts = await conn.execute(
        select(
            webhook_deliveries.c.subscription_id,
            webhook_deliveries.c.status,
            func.count(),
        ).group_by(webhook_deliveries.c.subscription_id, webhook_deliveries.c.status)
    )
    by_sub: dict[int, dict[str, int]] = {}
    for sid, status, n in counts:
        by_sub.setdefault(sid, {})[status] = int(n)
    return [{**s._mapping, "deliveries": by_sub.get(s.id, {})} for s in subs]


async def deactivate_subscription(conn: AsyncConnection, subscription_id: int) -> bool:
    """Whether an active subscription of that id was there (and is now inactive)."""
    result = await conn.execute(
        update(webhook_subscriptions)
        .where(
            webhook_subscriptions.c.id == subscription_id,
            webhook_subscriptions.c.active.is_(True),
        )
        .values(active=False)
    )
    return bool(result.rowcount)


def _due(now: datetime) -> ColumnElement[bool]:
    """A delivery still pending whose next attempt is due by ``now``."""
    return and_(
        webhook_deliveries.c.status == "pending", webhook_deliveries.c.next_attempt_at <= now
    )


async def due_subscriptions(conn: AsyncConnection, now: datetime) -> list[int]:
    """Subscriptions with a delivery due by ``now``, oldest delivery first."""
    rows = await conn.execute(
        select(webhook_deliveries.c.subscription_id)
        .where(_due(now))
        .group_by(webhook_deliveries.c.subscription_id)
        .order_by(func.min(webhook_deliveries.c.id))
    )
    return [int(sid) for (sid,) in rows]


async def lease_due(
    conn: AsyncConnection, subscription_id: int, now: datetime, limit: int, lease: datetime
) -> list[Any]:
    """Up to ``limit`` of the subscription's deliveries due by ``now``, in id order (``id,
    payload, attempts, url, secret``), leased until ``lease``: other replicas (and this one's
    next poll) leave them alone; rows another transaction holds are skipped."""
    due = (
        await conn.execute(
            select(
                webhook_deliveries.c.id,
                webhook_deliveries.c.payload,
                webhook_deliveries.c.attempts,
                webhook_subscriptions.c.url,
                webhook_subscriptions.c.secret,
            )
            .join(
                webhook_subscriptions,
                webhook_subscriptions.c.id == webhook_deliveries.c.subscription_id,
            )
            .where(webhook_deliveries.c.subscription_id == subscription_id, _due(now))
            .order_by(webhook_deliveries.c.id)
            .limit(limit)
            .with_for_update(of=webhook_deliveries, skip_locked=True)
        )
    ).all()
    if due:
        await conn.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.id.in_([row.id for row in due]))
            .values(next_attempt_at=lease)
        )
    return list(due)


async def record_attempt(
    conn: AsyncConnection, delivery_id: int, values: dict[str, object]
) -> None:
    """A delivery's attempt recorded (its status, attempts, error, next attempt)."""
    await conn.execute(
        update(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id).values(**values)
    )


async def lock_clear_secrets(conn: AsyncConnection) -> list[tuple[int, str]]:
    """Subscriptions whose secret older versions stored in clear (id, secret), locked."""
    rows = await conn.execute(
        select(webhook_subscriptions.c.id, webhook_subscriptions.c.secret)
        .where(
            webhook_subscriptions.c.secret.startswith(
                subscription_secrets.CLEAR_PREFIX, autoescape=True
            )
        )
        .with_for_update(skip_locked=True)
    )
    return [(int(sid), secret) for sid, secret in rows.all()]


async def store_secret(conn: AsyncConnection, subscription_id: int, sealed: str) -> None:
    await conn.execute(
        update(webhook_subscriptions)
        .where(webhook_subscriptions.c.id == subscription_id)
        .values(secret=sealed)
    )
