"""Fault-injection scenarios (issue 7): the real stack as processes, a fault, the invariant.

Every test here is marked ``chaos``. The long ones run only with ``CLM_CHAOS=1`` (``make
chaos``); the ones also marked ``chaos_short`` are quick enough for every ``make test``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clm_devstack.kafka import KafkaConfig, start_kafka, stop_kafka
from clm_devstack.postgres import start_postgres, stop_postgres
from clm_devstack.postgres_config import PostgresConfig, database_url
from tests.chaos.harness import ChaosStack
from tests.conftest import alembic_upgrade
from tests.e2e.conftest import free_port, own_kafka, prepare

CHAOS_ENV = "CLM_CHAOS"


@pytest.fixture(autouse=True)
def _chaos_profile(request: pytest.FixtureRequest) -> None:
    request.node.add_marker(pytest.mark.chaos)
    request.node.add_marker(pytest.mark.e2e)
    long = request.node.get_closest_marker("chaos_short") is None
    if long and os.environ.get(CHAOS_ENV) != "1":
        pytest.skip(f"a long fault-injection scenario: `make chaos` (or {CHAOS_ENV}=1) runs it")


@pytest.fixture
def chaos_env(clm_env: dict[str, str]) -> dict[str, str]:
    """This test's settings, tuned to notice faults fast: a lost member within seconds, a
    503 after 2 s without the broker's ack, a sweep every 2 s."""
    return {
        **clm_env,
        "CLM_KAFKA_SESSION_TIMEOUT_S": "6",
        "CLM_KAFKA_HEARTBEAT_INTERVAL_S": "1",
        "CLM_INGEST_PUBLISH_TIMEOUT_S": "2",
        "CLM_STAGE_ENGINE_SWEEP_S": "2",
        "CLM_STAGE_ENGINE_BATCH_RECORDS": "100",
        "CLM_STAGE_ENGINE_IDLE_RECHECK_S": "1",
    }


@pytest.fixture
async def shared_env(chaos_env: dict[str, str]) -> AsyncIterator[dict[str, str]]:
    """On the shared test broker and Postgres: topics created, keys stored."""
    await prepare(chaos_env)
    yield chaos_env


@pytest.fixture
def stack(shared_env: dict[str, str], tmp_path: Path) -> Iterator[ChaosStack]:
    """The three services on the shared broker and Postgres; stopped after the test."""
    started = ChaosStack(shared_env, tmp_path / "logs")
    try:
        yield started.start_all()
    finally:
        started.stop_all()


@dataclass(frozen=True)
class OwnBroker:
    cfg: KafkaConfig
    env: dict[str, str]


@pytest.fixture
async def own_broker(chaos_env: dict[str, str], tmp_path: Path) -> AsyncIterator[OwnBroker]:
    """A Kafka broker of this test's own (to kill and pause), topics created, keys stored."""
    cfg = own_kafka(tmp_path / "kafka")
    start_kafka(cfg)
    try:
        env = {**chaos_env, "CLM_KAFKA_BOOTSTRAP": cfg.bootstrap}
        await prepare(env)
        yield OwnBroker(cfg, env)
    finally:
        stop_kafka(cfg)


@dataclass(frozen=True)
class OwnPostgres:
    cfg: PostgresConfig
    env: dict[str, str]


@pytest.fixture
async def own_postgres(chaos_env: dict[str, str]) -> AsyncIterator[OwnPostgres]:
    """A Postgres server of this test's own (to crash and restart), migrated, keys stored.

    Its state lives in a fresh directory under the system's temporary directory: the server
    runs as the ``postgres`` OS user when we are root, and pytest's ``tmp_path`` is private.
    Settings as the test stack's (``fast_unsafe``: no fsync, asynchronous commit), so a crash
    may also take back the last transactions the consumers saw committed.
    """
    state = Path(tempfile.mkdtemp(prefix="clm-chaos-pg-"))
    cfg = PostgresConfig(state_dir=state, port=free_port(), fast_unsafe=True)
    try:
        await asyncio.to_thread(start_postgres, cfg)
        url = database_url(cfg)
        await asyncio.to_thread(alembic_upgrade, url)
        env = {**chaos_env, "CLM_DATABASE_URL": url}
        await prepare(env)
        yield OwnPostgres(cfg, env)
    finally:
        await asyncio.to_thread(stop_postgres, cfg, immediate=True)
        shutil.rmtree(state, ignore_errors=True)
