"""Throw-away migrated databases for the benchmarks, on the server ``make bench`` started."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]


def plain_url(url: str) -> str:
    """The asyncpg form of a SQLAlchemy URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def admin_url() -> str:
    """A URL of a role that may create databases (what ``make bench``'s test stack gives)."""
    url = os.environ.get("CLM_TEST_PG_ADMIN_URL") or os.environ["CLM_DATABASE_URL"]
    return f"{url.rpartition('/')[0]}/postgres"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(plain_url(admin_url()))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_migrated_database(prefix: str) -> str:
    """A new database named ``<prefix>_<random>``, migrated to head; its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = f"{admin_url().rpartition('/')[0]}/{name}"
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env={**os.environ, "CLM_DATABASE_URL": url},
        check=True,
        capture_output=True,
    )
    return url


async def drop_database(url: str) -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{url.rpartition("/")[2]}" WITH (FORCE)')


async def postmaster_pid(conn: asyncpg.Connection) -> int | None:
    """The server's postmaster process, when it runs on this box (its pid file)."""
    try:
        data = await conn.fetchval("SHOW data_directory")
        return int((Path(data) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, asyncpg.PostgresError):
        return None
