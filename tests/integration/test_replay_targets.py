"""A replay's target: the sweeper waits until the group re-applied the log as it stood when the
replay began, so inactivity moves never act on a half-rebuilt customer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select, update

from clm_domain.events import parse_event
from clm_domain.lifecycle import apply_event
from clm_domain.rules import LifecycleRules
from clm_infra.db import create_engine
from clm_infra.kafka import log_ends
from clm_infra.replay import replay_behind, reset_for_replay
from clm_infra.schema import consumer_offsets, customers, replay_targets
from clm_infra.settings import CommonSettings
from clm_stage_engine.repository import upsert_customers
from clm_stage_engine.sweeper import sweep_forever
from tests.factories import event_doc
from tests.integration.conftest import send_events

GROUP = "replay-targets-test"
RULES = LifecycleRules()


async def test_the_sweeper_waits_for_a_replay_to_reach_the_log_end(common: CommonSettings) -> None:
    old = datetime.now(UTC) - timedelta(days=400)
    docs = [
        event_doc("purchase", customer_id=f"r{i}", occurred_at=old.isoformat()) for i in range(3)
    ]
    await send_events(common, *docs)
    ends = await log_ends(common.kafka, common.topics.events)
    assert sum(ends.values()) == 3

    engine = create_engine(common.database.url, pool_size=1)
    try:
        async with engine.begin() as conn:
            assert await reset_for_replay(conn, GROUP, common.topics.events, ends) == 0
            assert await replay_behind(conn, GROUP) == 3  # nothing re-applied yet
        # one partition caught up, the others not: still behind
        async with engine.begin() as conn:
            first = min(p for p, end in ends.items() if end > 0)
            await conn.execute(
                insert(consumer_offsets),
                [
                    {
                        "group_id": GROUP,
                        "topic": common.topics.events,
                        "partition": p,
                        "next_offset": 0,
                    }
                    for p in ends
                ],
            )
            await conn.execute(
                update(consumer_offsets)
                .where(consumer_offsets.c.group_id == GROUP, consumer_offsets.c.partition == first)
                .values(next_offset=ends[first])
            )
            assert await replay_behind(conn, GROUP) == 3 - ends[first]
        # every partition at the end recorded: done, and the targets are gone
        async with engine.begin() as conn:
            for p, end in ends.items():
                await conn.execute(
                    update(consumer_offsets)
                    .where(consumer_offsets.c.group_id == GROUP, consumer_offsets.c.partition == p)
                    .values(next_offset=end)
                )
            assert await replay_behind(conn, GROUP) == 0
            left = await conn.execute(select(func.count()).select_from(replay_targets))
            assert left.scalar_one() == 0
        # another group's replay never holds this one's sweeper
        async with engine.begin() as conn:
            assert await replay_behind(conn, "some-other-group") == 0
    finally:
        await engine.dispose()


async def test_the_sweep_loop_moves_nobody_until_the_replay_is_done(
    common: CommonSettings,
) -> None:
    old = datetime.now(UTC) - timedelta(days=400)
    event = parse_event(event_doc("purchase", customer_id="quiet", occurred_at=old.isoformat()))
    state = apply_event(None, event, RULES).state  # a customer silent for 400 days
    engine = create_engine(common.database.url, pool_size=1)

    async def sweep_a_while() -> str:
        stopping = asyncio.Event()
        loop = asyncio.create_task(
            sweep_forever(
                engine,
                RULES,
                lambda: datetime.now(UTC),
                lifecycle_topic=common.topics.lifecycle,
                group_id=GROUP,
                every_s=0.05,
                batch=100,
                stopping=stopping,
            )
        )
        await asyncio.sleep(0.5)
        stopping.set()
        await loop
        async with engine.connect() as conn:
            stage = await conn.execute(
                select(customers.c.stage).where(customers.c.customer_id == "quiet")
            )
            return str(stage.scalar_one())

    try:
        async with engine.begin() as conn:
            await upsert_customers(conn, [state])
            await reset_for_replay(conn, GROUP, common.topics.events, {0: 5})
            await conn.execute(  # reset_for_replay cleared the customers: store it again
                insert(consumer_offsets).values(
                    group_id=GROUP, topic=common.topics.events, partition=0, next_offset=2
                )
            )
            await upsert_customers(conn, [state])
        assert await sweep_a_while() == state.stage.value  # replay under way: not moved
        async with engine.begin() as conn:
            await conn.execute(
                update(consumer_offsets)
                .where(consumer_offsets.c.group_id == GROUP)
                .values(next_offset=5)
            )
        assert await sweep_a_while() == "churned"  # caught up: the moves are made
    finally:
        await engine.dispose()
