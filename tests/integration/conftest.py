"""Helpers for integration tests: topics created, settings built, keys seeded, apps entered."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain.events import dump_event, parse_event
from clm_infra.db import create_engine
from clm_infra.kafka import topic_partitions
from clm_infra.privacy.ciphers import master_keys
from clm_infra.privacy.reader import open_events
from clm_infra.settings import CommonSettings, KafkaSettings
from clm_metrics.app import create_app as create_metrics_app
from clm_metrics.settings import MetricsSettings
from clm_stage_engine.app import create_app as create_engine_app
from clm_stage_engine.settings import StageEngineSettings
from tests.conftest import Infra, _plain, _with_database, clm_env_for, cloned_database
from tests.integration.apps import app_client, read_customer
from tests.keys import seed

T = TypeVar("T")

#: Settings that turn every request limit off (a test that is one client sending fast).
NO_REQUEST_LIMITS: dict[str, Any] = {
    "limits": {"key_per_s": 0, "address_per_s": 0, "failed_auth_per_s": 0},
}


@pytest.fixture(autouse=True)
def _mark(request: pytest.FixtureRequest) -> None:
    request.node.add_marker(pytest.mark.integration)


@pytest.fixture
def settings_env(clm_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in clm_env.items():
        monkeypatch.setenv(key, value)
    return clm_env


@pytest.fixture
async def common(settings_env: dict[str, str]) -> AsyncIterator[CommonSettings]:
    """Settings of this test, with its topics created and its keys seeded."""
    settings = CommonSettings()
    await seed(settings)
    yield settings


@pytest.fixture
async def db(common: CommonSettings) -> AsyncIterator[AsyncEngine]:
    """An engine on this test's database, disposed after it."""
    engine = create_engine(common.database.url, pool_size=3)
    yield engine
    await engine.dispose()


@pytest.fixture
async def metrics_app(common: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The metrics service of this test, running (its consumer on the test's lifecycle topic):
    a client of its API."""
    app = create_metrics_app(MetricsSettings())
    async with app_client(app, "http://metrics") as c:
        yield c


@pytest.fixture(scope="module")
def module_env(infra: Infra, template_database: str) -> Iterator[dict[str, str]]:
    """Like ``common``, shared by a module's tests (one served app for many cases): its own
    database, topics and keys, its settings in the environment while the module runs."""
    with (
        cloned_database(infra, template_database) as url,
        pytest.MonkeyPatch.context() as patch,
    ):
        env = clm_env_for(infra, url)
        for key, value in env.items():
            patch.setenv(key, value)
        asyncio.run(seed(CommonSettings()))
        yield env


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 20.0, every: float = 0.1
) -> T:
    """Poll ``probe`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


@pytest.fixture
async def client(common: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    """A client on a stage engine app of this test's settings, its workers running (a test
    module that needs another app defines its own ``client``)."""
    app = create_engine_app(StageEngineSettings(stage_engine_idle_recheck_s=0.5))
    async with app_client(app, "http://engine") as c:
        yield c


async def until_events(client: httpx.AsyncClient, cid: str, n: int) -> dict[str, Any]:
    """Customer ``cid`` from the stage engine's read API once it has ``n`` events applied."""

    async def probe() -> dict[str, Any] | None:
        c = await read_customer(client, cid)
        return c if c and c["events"] == n else None

    return await eventually(probe)


async def read_topic(
    bootstrap: str, topic: str, *, expect: int, timeout: float = 20.0
) -> list[Any]:
    """Read the topic from the beginning until ``expect`` records came (or time ran out)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    partitions = (await topic_partitions(KafkaSettings(bootstrap=bootstrap), [topic]))[topic]
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


def wire(doc: dict[str, Any]) -> tuple[bytes, bytes]:
    """An event document as the ingest would publish it: (key, value)."""
    event = parse_event(doc)  # no "now": tests play with time
    key = (event.customer_id or event.anonymous_id or "x").encode()
    return key, dump_event(event)


async def send_events(settings: CommonSettings, *docs: dict[str, Any]) -> None:
    """Publish event documents on the test's events topic, keyed like the ingest does."""
    await produce(settings.kafka.bootstrap, settings.topics.events, [wire(d) for d in docs])


async def produce(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    """Publish ``items`` in order (each partition's in the list's order), sent back to back
    rather than one round trip each (large histories), and wait until all are acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = [await producer.send(topic, value=value, key=key) for key, value in items]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def answer_of(response: httpx.Response, header: str) -> tuple[Any, ...]:
    """What two paths answering one request must agree on: status, content type, the
    ``WWW-Authenticate`` header and ``header``, and the JSON body."""
    return (
        response.status_code,
        response.headers.get("content-type", ""),
        response.headers.get("www-authenticate"),
        response.headers.get(header),
        response.json() if response.content else None,
    )


@pytest.fixture
async def bare_database(infra: Infra) -> AsyncIterator[str]:
    """An empty database (no migration run yet)."""
    name = f"clm_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(_plain(infra.admin_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _with_database(infra.admin_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def opened(common: CommonSettings, values: Sequence[bytes]) -> list[dict[str, Any]]:
    """Records of the events topic as their events were sent: personal fields opened with
    the test database's data keys (what the read API does)."""
    engine = create_engine(common.database.url, pool_size=1)
    try:
        async with engine.connect() as conn:
            docs = await open_events(conn, master_keys(common), [orjson.loads(v) for v in values])
    finally:
        await engine.dispose()
    return [doc for doc, _ in docs]
