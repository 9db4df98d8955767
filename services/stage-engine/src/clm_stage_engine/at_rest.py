"""Upgrades of what older versions stored in a form this one no longer writes, run when the
stage engine starts (it holds the keys; the migrations do not):

- erasure tombstones holding a bare SHA-256 of the customer id (``keyed`` false) become the
  keyed hash of :mod:`clm_domain.pseudonyms` (computed from that SHA-256: no id needed);
- webhook subscription secrets stored in clear (``whsec_…``) are sealed under
  ``CLM_SECRETS_KEY`` (:mod:`clm_infra.subscription_secrets`).

Both are idempotent and cheap once done; replicas starting together serialise on the rows.
Rows an engine of the older version writes during a rolling upgrade are upgraded at the next
start of any engine, and meanwhile a clear secret still delivers; a bare tombstone is not
recognised until then, so roll out before erasing customers (``docs/security.md``).
"""

from __future__ import annotations

import logging

from cryptography.fernet import MultiFernet
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain.pseudonyms import Pseudonyms
from clm_infra import subscription_secrets
from clm_infra.schema import erasures, webhook_subscriptions

log = logging.getLogger(__name__)


async def upgrade(engine: AsyncEngine, pseudonyms: Pseudonyms, box: MultiFernet) -> tuple[int, int]:
    """(tombstones rehashed, secrets sealed)."""
    async with engine.begin() as conn:
        legacy = (
            await conn.execute(
                select(erasures.c.customer_hash, erasures.c.erased_at)
                .where(erasures.c.keyed.is_(False))
                .with_for_update(skip_locked=True)
            )
        ).all()
        if legacy:
            # the keyed row may exist already (erased again by a newer engine): keep it
            await conn.execute(
                insert(erasures).on_conflict_do_nothing(index_elements=["customer_hash"]),
                [
                    {"customer_hash": pseudonyms.rehash(old), "erased_at": at, "keyed": True}
                    for old, at in legacy
                ],
            )
            await conn.execute(
                delete(erasures).where(
                    erasures.c.keyed.is_(False),
                    erasures.c.customer_hash.in_([old for old, _ in legacy]),
                )
            )
        clear = (
            await conn.execute(
                select(webhook_subscriptions.c.id, webhook_subscriptions.c.secret)
                .where(
                    webhook_subscriptions.c.secret.startswith(
                        subscription_secrets.CLEAR_PREFIX, autoescape=True
                    )
                )
                .with_for_update(skip_locked=True)
            )
        ).all()
        for sid, secret in clear:
            await conn.execute(
                update(webhook_subscriptions)
                .where(webhook_subscriptions.c.id == sid)
                .values(secret=subscription_secrets.seal(box, secret))
            )
    if legacy or clear:
        log.info(
            "upgraded at rest",
            extra={"tombstones_rehashed": len(legacy), "secrets_sealed": len(clear)},
        )
    return len(legacy), len(clear)
