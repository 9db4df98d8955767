"""Test infrastructure: real Kafka and Postgres for the integration and e2e layers.

Where do they come from?

1. ``CLM_KAFKA_BOOTSTRAP`` and ``CLM_DATABASE_URL`` point at running servers (``make test``
   starts a local test stack and sets them): use those. ``CLM_TEST_PG_ADMIN_URL`` may name a
   role that can create databases (default: the same URL).
2. Else, where a Docker engine answers: testcontainers (``apache/kafka`` in KRaft mode and
   ``postgres``), on random ports.
3. Else: the project's own local test stack (``clm_devstack``), started and stopped here.

Each test gets its own database (cloned from a migrated template) and its own topic names, so
tests never see each other's data.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Infra:
    kafka_bootstrap: str
    admin_url: str  # SQLAlchemy URL of a role that may CREATE DATABASE


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


def _docker_engine_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    kafka = os.environ.get("CLM_KAFKA_BOOTSTRAP")
    db = os.environ.get("CLM_DATABASE_URL")
    if kafka and db:
        yield Infra(kafka, os.environ.get("CLM_TEST_PG_ADMIN_URL", db))
        return
    if _docker_engine_available():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.postgres import PostgresContainer

        with (
            KafkaContainer("apache/kafka:4.1.1").with_kraft() as k,
            PostgresContainer("postgres:16", driver="asyncpg") as pg,
        ):
            yield Infra(k.get_bootstrap_server(), pg.get_connection_url())
        return
    from clm_devstack.postgres_config import database_url
    from clm_devstack.stacks import start_infra, stop_infra, testing_stack

    stack = testing_stack(REPO_ROOT)
    start_infra(stack)
    try:
        yield Infra(f"127.0.0.1:{stack.kafka.port}", database_url(stack.postgres))
    finally:
        stop_infra(stack)


def alembic_upgrade(url: str, command: str = "upgrade", revision: str = "head") -> None:
    """``alembic upgrade head`` on ``url`` (or another command and revision)."""
    env = {**os.environ, "CLM_DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "alembic", command, revision],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"alembic {command} {revision} failed:\n{done.stderr}")


@pytest.fixture(scope="session")
def template_database(infra: Infra) -> Iterator[str]:
    """A migrated database that every test's database is cloned from."""
    name = f"clm_tpl_{uuid.uuid4().hex[:10]}"
    _admin_sync(infra, f'CREATE DATABASE "{name}"')
    alembic_upgrade(_with_database(infra.admin_url, name))
    yield name
    _admin_sync(infra, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin_sync(infra: Infra, sql: str) -> None:
    import asyncio

    async def run() -> None:
        conn = await asyncpg.connect(_plain(infra.admin_url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def cloned_database(infra: Infra, template_database: str) -> Iterator[str]:
    """A fresh, migrated database (SQLAlchemy asyncpg URL), dropped on exit (outside a loop)."""
    name = f"clm_t_{uuid.uuid4().hex[:12]}"
    _admin_sync(infra, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    try:
        yield _with_database(infra.admin_url, name)
    finally:
        _admin_sync(infra, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def database_url(infra: Infra, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test (SQLAlchemy asyncpg URL)."""
    name = f"clm_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(_plain(infra.admin_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    finally:
        await conn.close()
    yield _with_database(infra.admin_url, name)
    conn = await asyncpg.connect(_plain(infra.admin_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def clm_env(infra: Infra, database_url: str) -> dict[str, str]:
    """CLM_* settings for this test: its database, its own topic names and consumer groups."""
    return clm_env_for(infra, database_url)


def clm_env_for(infra: Infra, database_url: str) -> dict[str, str]:
    """CLM_* settings on ``database_url`` with topic names and consumer groups of their own."""
    tag = uuid.uuid4().hex[:10]
    return {
        "CLM_ENV": "test",
        "CLM_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
        "CLM_DATABASE_URL": database_url,
        "CLM_TOPIC_EVENTS": f"t{tag}.events",
        "CLM_TOPIC_LIFECYCLE": f"t{tag}.lifecycle",
        "CLM_TOPIC_DLQ": f"t{tag}.dlq",
        "CLM_TOPIC_SEGMENTS": f"t{tag}.segments",
        "CLM_TOPIC_SEGMENTS_PARTITIONS": "3",
        "CLM_TOPIC_EVENTS_PARTITIONS": "3",
        "CLM_TOPIC_LIFECYCLE_PARTITIONS": "3",
        "CLM_STAGE_ENGINE_GROUP": f"t{tag}.stage-engine",
        "CLM_METRICS_GROUP": f"t{tag}.metrics",
        "CLM_METRICS_REFRESH_S": "0.5",
        "CLM_STAGE_ENGINE_BATCH_WAIT_S": "0.05",
        "CLM_METRICS_BATCH_WAIT_S": "0.05",
        "CLM_STAGE_ENGINE_OUTBOX_POLL_S": "0.02",
        "CLM_LOG_LEVEL": "INFO",
        # the tests' webhook receivers listen on this machine, over http
        "CLM_WEBHOOK_ALLOW_INSECURE": "true",
        "CLM_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
