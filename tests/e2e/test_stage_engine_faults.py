"""The stage engine under crashes and rebalances, as real processes: every event exactly once.

Events are produced straight to the topic up front; stage-engine processes are SIGKILLed at
random points mid-run, or scaled 1 → 2 → 1 while they work. At the end the customer rows, the
history and the dedupe table must say every event was applied exactly once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_devstack.services import ServiceProcess, start_service
from clm_domain.events import dump_event, parse_event
from clm_infra.db import create_engine
from clm_infra.schema import customer_events, customers, processed_events, stage_transitions
from tests.e2e.conftest import free_port
from tests.factories import event_doc
from tests.integration.conftest import eventually, produce, read_topic

CUSTOMERS = 400
PURCHASES = 15  # per customer: conversion, retention, loyalty = 3 moves each


def journeys() -> list[tuple[bytes, bytes]]:
    start = datetime.now(UTC) - timedelta(days=2)
    out = []
    for p in range(PURCHASES):
        for c in range(CUSTOMERS):
            doc = event_doc(
                "purchase",
                customer_id=f"crash-{c:03d}",
                event_id=f"crash-{c:03d}-{p:02d}",
                order_id=f"o-{p}",
                occurred_at=(start + timedelta(minutes=p)).isoformat(),
            )
            out.append((doc["customer_id"].encode(), dump_event(parse_event(doc))))
    return out


@pytest.fixture
def engine_env(prepared_env: dict[str, str]) -> dict[str, str]:
    return {
        **prepared_env,
        "CLM_STAGE_ENGINE_BATCH_RECORDS": "50",
        "CLM_KAFKA_SESSION_TIMEOUT_S": "6",
        "CLM_KAFKA_HEARTBEAT_INTERVAL_S": "1",
        "CLM_STAGE_ENGINE_SWEEP_S": "3600",
    }


@pytest.fixture
async def db(engine_env: dict[str, str]) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(engine_env["CLM_DATABASE_URL"], pool_size=2)
    yield engine
    await engine.dispose()


async def processed(db: AsyncEngine) -> int:
    """Events applied: claimed by a row in a customer's event log, or in processed_events."""
    async with db.connect() as conn:
        logged = (
            await conn.execute(select(func.count()).select_from(customer_events))
        ).scalar_one()
        claimed = (
            await conn.execute(select(func.count()).select_from(processed_events))
        ).scalar_one()
    return int(logged) + int(claimed)


async def assert_exactly_once(db: AsyncEngine, env: dict[str, str]) -> None:
    total = CUSTOMERS * PURCHASES

    async def all_processed() -> bool:
        return await processed(db) == total

    await eventually(all_processed, timeout=120, every=0.5)
    async with db.connect() as conn:
        purchases = (await conn.execute(select(func.sum(customers.c.purchases)))).scalar_one()
        per_customer = (
            await conn.execute(
                select(func.min(customers.c.purchases), func.max(customers.c.purchases))
            )
        ).one()
        moves = (
            await conn.execute(select(func.count()).select_from(stage_transitions))
        ).scalar_one()
        stages: dict[str, int] = dict(
            (
                await conn.execute(
                    select(customers.c.stage, func.count()).group_by(customers.c.stage)
                )
            ).all()
        )
    assert purchases == total
    assert tuple(per_customer) == (PURCHASES, PURCHASES)
    assert moves == 3 * CUSTOMERS
    assert stages == {"loyalty": CUSTOMERS}
    records = await read_topic(
        env["CLM_KAFKA_BOOTSTRAP"], env["CLM_TOPIC_LIFECYCLE"], expect=total, timeout=60
    )
    ids = {orjson.loads(r.value)["record_id"] for r in records}
    assert len(ids) == total  # at least once on the wire, each record id exactly once in content


async def test_sigkill_at_random_points_loses_and_doubles_nothing(
    engine_env: dict[str, str], db: AsyncEngine, tmp_path: Path
) -> None:
    await produce(engine_env["CLM_KAFKA_BOOTSTRAP"], engine_env["CLM_TOPIC_EVENTS"], journeys())
    rnd = random.Random(7)
    progress = [0]
    for _ in range(3):  # ten and more kills, of both consumers, are `make chaos`'s (scenario 4)
        proc = start_service("stage-engine", engine_env, tmp_path, free_port())
        done_before = progress[-1]

        async def moving(before: int = done_before) -> bool:
            return await processed(db) > before

        await eventually(moving, timeout=60, every=0.05)
        await asyncio.sleep(rnd.uniform(0.0, 0.3))
        proc.kill()  # SIGKILL somewhere in the middle of batches
        progress.append(await processed(db))
    final = start_service("stage-engine", engine_env, tmp_path, free_port())
    try:
        await assert_exactly_once(db, engine_env)
    finally:
        final.stop()
    # the kills really landed mid-run: progress was made, and not all of it, before them
    assert any(0 < p < CUSTOMERS * PURCHASES for p in progress[1:]), progress


async def test_replicas_joining_and_leaving_mid_run_apply_everything_once(
    engine_env: dict[str, str], db: AsyncEngine, tmp_path: Path
) -> None:
    events = journeys()
    half = len(events) // 2
    bootstrap, topic = engine_env["CLM_KAFKA_BOOTSTRAP"], engine_env["CLM_TOPIC_EVENTS"]
    procs: list[ServiceProcess] = []
    try:
        procs.append(start_service("stage-engine", engine_env, tmp_path / "a", free_port()))
        await produce(bootstrap, topic, events[:half])
        procs.append(start_service("stage-engine", engine_env, tmp_path / "b", free_port()))
        await produce(bootstrap, topic, events[half:])
        await asyncio.sleep(1.0)
        procs[0].stop()  # a graceful leave mid-run: the survivor takes its partitions over
        await assert_exactly_once(db, engine_env)
    finally:
        for p in procs:
            p.stop()
