"""The whole stack as real processes: the three services on free ports, over real HTTP."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from clm_devstack.kafka import KafkaConfig
from clm_devstack.services import ServiceProcess, start_service
from clm_infra.settings import CommonSettings, DatabaseSettings, KafkaSettings, TopicSettings
from tests.conftest import REPO_ROOT
from tests.keys import seed


@pytest.fixture(autouse=True)
def _mark(request: pytest.FixtureRequest) -> None:
    request.node.add_marker(pytest.mark.e2e)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def own_kafka(state_dir: Path) -> KafkaConfig:
    """A broker of a test's own (to kill or pause) on free ports, its state in ``state_dir``."""
    return KafkaConfig(
        state_dir=state_dir,
        port=free_port(),
        controller_port=free_port(),
        heap="256m",
        repo_root=REPO_ROOT,
        short_lived=True,
    )


@dataclass(frozen=True)
class Stack:
    ingest: str
    stage_engine: str
    metrics: str
    env: dict[str, str]
    processes: dict[str, ServiceProcess]


def settings_of(env: dict[str, str]) -> CommonSettings:
    """The shared settings ``env`` names (broker, database, topics and their partitions)."""
    return CommonSettings(
        kafka=KafkaSettings(bootstrap=env["CLM_KAFKA_BOOTSTRAP"]),
        database=DatabaseSettings(url=env["CLM_DATABASE_URL"]),
        topics=TopicSettings(
            events=env["CLM_TOPIC_EVENTS"],
            lifecycle=env["CLM_TOPIC_LIFECYCLE"],
            dlq=env["CLM_TOPIC_DLQ"],
            segments=env["CLM_TOPIC_SEGMENTS"],
            segments_partitions=int(env["CLM_TOPIC_SEGMENTS_PARTITIONS"]),
            events_partitions=int(env["CLM_TOPIC_EVENTS_PARTITIONS"]),
            lifecycle_partitions=int(env["CLM_TOPIC_LIFECYCLE_PARTITIONS"]),
        ),
    )


async def prepare(env: dict[str, str]) -> None:
    """Create the topics ``env`` names on its broker and store the test keys in its database."""
    await seed(settings_of(env))


@pytest.fixture
async def prepared_env(clm_env: dict[str, str]) -> AsyncIterator[dict[str, str]]:
    """This test's settings with its topics created and its keys stored."""
    await prepare(clm_env)
    yield clm_env


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (each is free when asked; nothing holds it)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@contextmanager
def running_stack(env: dict[str, str], logs_dir: Path) -> Iterator[Stack]:
    """The three services as processes on free ports with ``env``; stopped on exit.

    They start side by side: each waits for its own imports and lifespan, none needs
    another to answer its health check."""
    names = ("ingest", "stage-engine", "metrics")
    started: dict[str, ServiceProcess] = {}
    try:
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            starting = {
                name: pool.submit(start_service, name, env, logs_dir, port)
                for name, port in zip(names, free_ports(len(names)), strict=True)
            }
            wait(starting.values())
        for name, future in starting.items():
            if future.exception() is None:
                started[name] = future.result()
        for future in starting.values():
            future.result()  # the first start-up that failed, raised (the others stopped below)
        yield Stack(
            ingest=started["ingest"].base_url,
            stage_engine=started["stage-engine"].base_url,
            metrics=started["metrics"].base_url,
            env=env,
            processes=started,
        )
    finally:
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            list(pool.map(ServiceProcess.stop, started.values()))


@pytest.fixture
def stack(prepared_env: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    with running_stack(prepared_env, tmp_path) as started:
        yield started
