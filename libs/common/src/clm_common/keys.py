"""API keys: write keys (ingest) and read tokens (read APIs), stored as SHA-256 hashes.

Keys are 256-bit random strings, so a plain SHA-256 is enough to store them safely (no
password-style stretching needed). ``python -m clm_common.keys`` creates, lists, revokes keys
and seeds the well-known dev keys (only with ``CLM_ENV=dev``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import secrets
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_common.db import create_engine
from clm_common.schema import api_keys
from clm_common.settings import CommonSettings

KeyKind = Literal["write", "read"]
_PREFIX: dict[str, str] = {"write": "clmw_", "read": "clmr_"}


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
    rows = await conn.execute(
        select(
            api_keys.c.id,
            api_keys.c.kind,
            api_keys.c.source,
            api_keys.c.label,
            api_keys.c.created_at,
            api_keys.c.revoked_at,
        ).order_by(api_keys.c.id)
    )
    return [KeyRow(*r) for r in rows]


async def revoke(conn: AsyncConnection, key_id: int) -> bool:
    result = await conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    return bool(result.rowcount)


async def _run(args: argparse.Namespace, settings: CommonSettings) -> int:
    engine = create_engine(settings.database_url, pool_size=1, app_name="clm-keys")
    try:
        async with engine.begin() as conn:
            if args.command == "seed-dev":
                if settings.env != "dev":
                    print("keys: error: seed-dev needs CLM_ENV=dev", file=sys.stderr)
                    return 2
                await store_key(
                    conn, key=settings.dev_write_key, kind="write", source="dev", label="dev"
                )
                await store_key(
                    conn, key=settings.dev_read_token, kind="read", source="dev", label="dev"
                )
                print("dev keys seeded (source 'dev')")
            elif args.command == "create":
                key = new_key(args.kind)
                await store_key(conn, key=key, kind=args.kind, source=args.source, label=args.label)
                print(key)
            elif args.command == "list":
                for row in await list_keys(conn):
                    state = "revoked" if row.revoked_at else "active"
                    print(f"{row.id}\t{row.kind}\t{row.source}\t{state}\t{row.label}")
            elif args.command == "revoke":
                if not await revoke(conn, args.id):
                    print(f"keys: error: no active key with id {args.id}", file=sys.stderr)
                    return 1
                print(f"revoked key {args.id}")
    finally:
        await engine.dispose()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clm_common.keys")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--kind", choices=["write", "read"], required=True)
    create.add_argument("--source", required=True, help="the site or shop this key speaks for")
    create.add_argument("--label", default="")
    sub.add_parser("list", help="list keys (never their secrets)")
    rev = sub.add_parser("revoke", help="revoke a key by id")
    rev.add_argument("id", type=int)
    sub.add_parser("seed-dev", help="store CLM_DEV_WRITE_KEY and CLM_DEV_READ_TOKEN (dev only)")
    args = parser.parse_args(argv)
    settings = CommonSettings()
    try:
        return asyncio.run(_run(args, settings))
    except OSError as exc:
        print(
            f"keys: error: cannot reach Postgres ({exc}) — start it or set CLM_DATABASE_URL",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
