"""Throw-away migrated databases for the benchmarks, on the server ``make bench`` started."""

from __future__ import annotations

import asyncio
import math
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


def server_cpu_s(postmaster: int | None) -> float:
    """CPU seconds (user + system) the whole server used so far: the postmaster, its live
    children and the children it reaped (their time is added to its ``cutime``/``cstime``
    when they exit). NaN where /proc is not there."""
    if postmaster is None:
        return math.nan
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == postmaster:
            total += sum(int(f) for f in fields[11:15]) / tick
        elif int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total
