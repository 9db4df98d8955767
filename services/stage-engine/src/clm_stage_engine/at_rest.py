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
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain.pseudonyms import Pseudonyms
from clm_infra import subscription_secrets
from clm_stage_engine.repository import erasure, webhooks

log = logging.getLogger(__name__)


async def upgrade(engine: AsyncEngine, pseudonyms: Pseudonyms, box: MultiFernet) -> tuple[int, int]:
    """(tombstones rehashed, secrets sealed)."""
    async with engine.begin() as conn:
        legacy = await erasure.lock_bare_tombstones(conn)
        await erasure.rekey_tombstones(
            conn, [(old, pseudonyms.rehash(old), at) for old, at in legacy]
        )
        clear = await webhooks.lock_clear_secrets(conn)
        for sid, secret in clear:
            await webhooks.store_secret(conn, sid, subscription_secrets.seal(box, secret))
    if legacy or clear:
        log.info(
            "upgraded at rest",
            extra={"tombstones_rehashed": len(legacy), "secrets_sealed": len(clear)},
        )
    return len(legacy), len(clear)
