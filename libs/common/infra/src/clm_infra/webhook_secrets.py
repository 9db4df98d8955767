"""Webhook signing secrets per source and provider, encrypted at rest.

A provider (Shopify, Stripe, Zendesk, or our generic signed webhook) signs each delivery with
HMAC-SHA256 under a shared secret; verifying needs the secret itself, so unlike API keys it
cannot be stored only as a hash. It is stored as a Fernet token (AES-128-CBC + HMAC-SHA256)
under ``CLM_SECRETS_KEY``, which lives outside the database: a dump of Postgres alone does not
reveal the secrets. Several comma-separated keys (newest first) allow key rotation.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clm_infra.revocable import list_rows, revoke_row
from clm_infra.schema import webhook_secrets
from clm_infra.settings import CommonSettings

Provider = Literal["shopify", "stripe", "zendesk", "generic"]
PROVIDERS: tuple[Provider, ...] = ("shopify", "stripe", "zendesk", "generic")

# Used only when CLM_ENV is dev or test and no CLM_SECRETS_KEY is set; refused in prod.
DEV_SECRETS_KEY = "Y2xtLXN0cmVhbS1kZXYtb25seS1zZWNyZXRzLWtleSE="


class SecretsKeyMissing(Exception):
    """CLM_SECRETS_KEY is not set (prod) or not a valid Fernet key."""


def cipher(settings: CommonSettings) -> MultiFernet:
    """The cipher of webhook secrets, from ``CLM_SECRETS_KEY`` (dev/test: a well-known key)."""
    raw = settings.secrets_key.get_secret_value() if settings.secrets_key else ""
    if not raw.strip():
        if settings.env == "prod":
            raise SecretsKeyMissing(
                "CLM_SECRETS_KEY is not set: make one with `clm webhooks new-key` and set it "
                "for the ingest and the CLI"
            )
        raw = DEV_SECRETS_KEY
    try:
        return MultiFernet([Fernet(k.strip()) for k in raw.split(",") if k.strip()])
    except ValueError as exc:
        raise SecretsKeyMissing(f"CLM_SECRETS_KEY is not a Fernet key: {exc}") from None


def new_secret() -> str:
    return "clmwh_" + secrets.token_urlsafe(32)


def new_cipher_key() -> str:
    return Fernet.generate_key().decode()


@dataclass(frozen=True, slots=True)
class SecretRow:
    id: int
    source: str
    provider: str
    label: str
    created_at: datetime
    revoked_at: datetime | None


async def store_secret(
    conn: AsyncConnection,
    box: MultiFernet,
    *,
    source: str,
    provider: Provider,
    secret: str,
    label: str = "",
) -> int:
    row = await conn.execute(
        webhook_secrets.insert()
        .values(
            source=source,
            provider=provider,
            secret_encrypted=box.encrypt(secret.encode()).decode(),
            label=label,
        )
        .returning(webhook_secrets.c.id)
    )
    return int(row.scalar_one())


async def list_secrets(conn: AsyncConnection) -> list[SecretRow]:
    return await list_rows(conn, webhook_secrets, SecretRow)


async def revoke_secret(conn: AsyncConnection, secret_id: int) -> bool:
    return await revoke_row(conn, webhook_secrets, secret_id)


async def active_secrets(
    conn: AsyncConnection, box: MultiFernet, provider: str
) -> list[tuple[str, bytes]]:
    """(source, secret) of every live secret of ``provider``; undecryptable rows are skipped."""
    rows = await conn.execute(
        select(webhook_secrets.c.source, webhook_secrets.c.secret_encrypted).where(
            webhook_secrets.c.provider == provider, webhook_secrets.c.revoked_at.is_(None)
        )
    )
    found: list[tuple[str, bytes]] = []
    for source, token in rows:
        try:
            found.append((source, box.decrypt(token.encode())))
        except InvalidToken:
            continue
    return found


class SecretCache:
    """Live secrets per provider, read from Postgres and kept for a few seconds."""

    def __init__(self, engine: AsyncEngine, box: MultiFernet, *, ttl_s: float = 10.0) -> None:
        self._engine = engine
        self._box = box
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, list[tuple[str, bytes]]]] = {}

    async def for_provider(self, provider: str) -> list[tuple[str, bytes]]:
        now = time.monotonic()
        hit = self._cache.get(provider)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self._engine.connect() as conn:
            found = await active_secrets(conn, self._box, provider)
        self._cache[provider] = (now + self._ttl, found)
        return found
