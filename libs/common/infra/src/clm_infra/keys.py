"""API keys, stored as SHA-256 hashes, of three kinds (``docs/security.md``):

- ``write`` (``clmw_``): posts events for one source, nothing else; safe in a browser;
- ``read`` (``clmr_``): the read APIs (customers, stages, KPIs);
- ``admin`` (``clma_``): erasure, merges, webhook subscriptions (and what the read token can't).

Keys are 256-bit random strings, so a plain SHA-256 is enough to store them safely (no
password-style stretching needed). ``clm keys`` (or ``python -m clm_infra.keys``) creates,
lists, revokes keys and seeds the well-known dev keys (only with ``CLM_ENV=dev``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_infra.revocable import list_rows, revoke_row
from clm_infra.schema import api_keys

KeyKind = Literal["write", "read", "admin"]
KINDS: tuple[KeyKind, ...] = ("write", "read", "admin")
_PREFIX: dict[str, str] = {"write": "clmw_", "read": "clmr_", "admin": "clma_"}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(kind: KeyKind) -> str:
    return _PREFIX[kind] + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: int
    kind: str
    source: str
    label: str
    created_at: datetime
    revoked_at: datetime | None


async def store_key(
    conn: AsyncConnection, *, key: str, kind: KeyKind, source: str, label: str = ""
) -> bool:
    """Store a key's hash; False when that key was stored already (idempotent seeding)."""
    result = await conn.execute(
        insert(api_keys)
        .values(kind=kind, source=source, key_hash=hash_key(key), label=label)
        .on_conflict_do_nothing(index_elements=["key_hash"])
    )
    return bool(result.rowcount)


async def lookup(conn: AsyncConnection, key: str) -> tuple[str, str] | None:
    """(kind, source) of a live key, or None."""
    row = (
        await conn.execute(
            select(api_keys.c.kind, api_keys.c.source).where(
                api_keys.c.key_hash == hash_key(key), api_keys.c.revoked_at.is_(None)
            )
        )
    ).first()
    return None if row is None else (row.kind, row.source)


async def list_keys(conn: AsyncConnection) -> list[KeyRow]:
    return await list_rows(conn, api_keys, KeyRow)


async def revoke(conn: AsyncConnection, key_id: int) -> bool:
    return await revoke_row(conn, api_keys, key_id)
