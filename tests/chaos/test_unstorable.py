"""Records the stage engine decodes but cannot store, and a lane that cannot advance (issue 28).

Poison records produced straight to the events topic (as a producer that bypasses the
ingest's checks would) among 10,000 good events, through the real stage-engine process: every
good event is applied exactly once, each poison record is in the DLQ with its reason, and the
lag returns to 0. Records Postgres refuses (here a trigger of the test's database refuses
marked event ids: :mod:`tests.pg_refusal`) fail their whole batch, which is bisected to find
them; before issue 28 the batch was retried forever and its partition stalled. The values the
issue named (a ``+16:00`` offset, year 1, JSON 250 deep) are now refused by the engine's
decoder (the shared bounds) and dead-lettered as undecodable.

And a lane kept from advancing by something retrying will fix (a lock another session holds
on the customers table) flips ``/readyz`` to 503, naming the lane, within the configured stall
limit, sets the ``clm_consumer_stalled`` gauge, and recovers once the lock goes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import select, text

from clm_domain.events import EXAMPLE_PROPERTIES
from clm_infra.db import create_engine
from clm_infra.schema import customer_events, processed_events
from tests.chaos.harness import ChaosStack, lag, read_dead_letters, sample_value, scrape
from tests.integration.conftest import eventually
from tests.pg_refusal import REFUSED, REFUSED_SQLSTATE, refuse_marked_events


def good_events(n: int, rnd: random.Random, *, customers: int = 400) -> list[dict[str, Any]]:
    """``n`` valid events of ``customers`` customers, each customer's in time order."""
    start = datetime.now(UTC) - timedelta(days=3)
    types = ["site_visit"] * 6 + ["signup", "purchase", "support_ticket", "review"]
    out = []
    for i in range(n):
        cid = f"good-{rnd.randrange(customers)}"
        kind = rnd.choice(types)
        props = dict(EXAMPLE_PROPERTIES[kind])
        if kind == "purchase":
            props["order_id"] = f"o{i}"
        if kind == "support_ticket":
            props["ticket_id"] = f"t{i}"
        out.append(
            {
                "event_id": f"good-{i}",
                "type": kind,
                "customer_id": cid,
                "source": "shop",
                "occurred_at": (start + timedelta(seconds=10 * i)).isoformat(),
                "properties": props,
            }
        )
    return out


def _event(event_id: str, cid: str, occurred_at: str, **props: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "site_visit",
        "customer_id": cid,
        "source": "shop",
        "occurred_at": occurred_at,
        "properties": {"url": "/x", **props},
    }


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"n": value}
    return value


#: kind → (the documents of one customer in order, each with whether it is poison; words one
#: of which each poison one's DLQ reason holds)
PoisonKind = tuple[Callable[[str], list[tuple[dict[str, Any], bool]]], tuple[str, ...]]
KINDS: dict[str, PoisonKind] = {
    # out of the shared bounds, refused by the engine's decoder (before the bounds, Postgres
    # refused the offset with 22009 and stalled the partition; the reducer failed on year 0)
    "offset_16": (
        lambda cid: [(_event(f"{cid}-0", cid, "2026-11-20T10:00:00+16:00"), True)],
        ("undecodable",),
    ),
    "year_1": (
        lambda cid: [(_event(f"{cid}-0", cid, "0001-01-01T00:00:00+14:00"), True)],
        ("undecodable",),
    ),
    "deep_json": (
        lambda cid: [(_event(f"{cid}-0", cid, "2026-11-20T10:00:00Z", deep=_nested(250)), True)],
        ("undecodable",),
    ),
    # inserted into customer_events and refused there (the test's trigger, 22003): three of a
    # customer's five events, between its good ones
    "refused_by_pg": (
        lambda cid: [
            (
                _event(
                    f"{REFUSED}-{cid}-{i}" if i % 2 == 0 else f"{cid}-{i}",
                    cid,
                    f"2026-11-20T10:00:0{i}Z",
                ),
                i % 2 == 0,
            )
            for i in range(5)
        ],
        (REFUSED_SQLSTATE,),
    ),
}


async def produce_all(
    bootstrap: str, topic: str, docs: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], int, int]]:
    """Produce each document keyed by its customer, in order; where each landed."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        pending = [
            await producer.send(topic, value=orjson.dumps(d), key=str(d["customer_id"]).encode())
            for d in docs
        ]
        metas = await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return [(d, m.partition, m.offset) for d, m in zip(docs, metas, strict=True)]


def mixed(rnd: random.Random, copies: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """10,000 good events with ``copies`` customers of each poison kind spliced in at random
    places (each customer's documents in order); the poison event ids and their kinds."""
    docs = good_events(10_000, rnd)
    poison: dict[str, str] = {}
    for kind, (make, _) in KINDS.items():
        for copy in range(copies):
            theirs = make(f"poison-{kind}-{copy}")
            poison.update((str(d["event_id"]), kind) for d, bad in theirs if bad)
            at = sorted(rnd.sample(range(len(docs)), len(theirs)))
            for offset, (i, (d, _)) in enumerate(zip(at, theirs, strict=True)):
                docs.insert(i + offset, d)
    return docs, poison


async def run_mixed(
    shared_env: dict[str, str], tmp_path: Path, *, engines: int, copies: int
) -> None:
    rnd = random.Random(28)
    docs, poison = mixed(rnd, copies)
    env = {**shared_env, "CLM_STAGE_ENGINE_BATCH_RECORDS": "200"}
    stack = ChaosStack(env, tmp_path / "logs")
    db = create_engine(env["CLM_DATABASE_URL"], pool_size=1)
    try:
        await refuse_marked_events(db)
        for i in range(engines):
            stack.start("stage-engine", replica=f"r{i}")
        placed = await produce_all(env["CLM_KAFKA_BOOTSTRAP"], env["CLM_TOPIC_EVENTS"], docs)
        if engines > 1:  # one replica killed while the batches are bisected: its partitions move
            await asyncio.sleep(3)
            stack.procs["stage-engine"][0].kill()

        async def drained() -> bool:
            return (await lag(env, db))[env["CLM_TOPIC_EVENTS"]] == 0

        await eventually(drained, timeout=240, every=1.0)
        async with db.connect() as conn:
            logged = [str(e) for (e,) in await conn.execute(select(customer_events.c.event_id))]
            claimed = logged + [
                str(e) for (e,) in await conn.execute(select(processed_events.c.event_id))
            ]
        dead = await read_dead_letters(env["CLM_KAFKA_BOOTSTRAP"], env["CLM_TOPIC_DLQ"])
    finally:
        stack.stop_all()
        await db.dispose()

    good = [str(d["event_id"]) for d in docs if str(d["event_id"]) not in poison]
    assert len(good) >= 10_000
    counts: dict[str, int] = {}
    for e in claimed:
        counts[e] = counts.get(e, 0) + 1
    assert [e for e in good if counts.get(e) != 1] == [], "good events not applied exactly once"
    # a poison record is neither in a customer's event log nor claimed
    assert [e for e in poison if e in set(claimed)] == [], "poison applied or claimed"
    where = {(p, o): str(d["event_id"]) for d, p, o in placed}
    dead_ids = sorted(where[(d.partition, d.offset)] for d in dead)
    assert dead_ids == sorted(poison), "the DLQ holds exactly the poison, once each"
    for d in dead:
        kind = poison[where[(d.partition, d.offset)]]
        assert any(w in d.reason for w in KINDS[kind][1]), (kind, d.reason)


@pytest.mark.chaos_short
@pytest.mark.timeout(300)
async def test_each_unstorable_kind_among_10000_good_events_is_dead_lettered(
    shared_env: dict[str, str], tmp_path: Path
) -> None:
    await run_mixed(shared_env, tmp_path, engines=1, copies=1)


@pytest.mark.timeout(600)
async def test_unstorable_records_with_two_engines_and_one_killed_mid_way(
    shared_env: dict[str, str], tmp_path: Path
) -> None:
    await run_mixed(shared_env, tmp_path, engines=2, copies=4)


@pytest.mark.chaos_short
@pytest.mark.timeout(240)
async def test_a_stalled_lane_flips_readiness_within_the_stall_limit(
    shared_env: dict[str, str], tmp_path: Path
) -> None:
    stall_s = 5.0
    env = {**shared_env, "CLM_STAGE_ENGINE_STALL_S": str(stall_s)}
    stack = ChaosStack(env, tmp_path / "logs")
    db = create_engine(env["CLM_DATABASE_URL"], pool_size=2)
    bootstrap, topic = env["CLM_KAFKA_BOOTSTRAP"], env["CLM_TOPIC_EVENTS"]
    try:
        engine = stack.start("stage-engine")
        async with httpx.AsyncClient(base_url=engine.base_url, timeout=10) as http:
            await produce_all(bootstrap, topic, good_events(50, random.Random(1)))

            async def drained() -> bool:
                return (await lag(env, db))[topic] == 0

            await eventually(drained, timeout=60, every=0.5)
            assert (await http.get("/readyz")).status_code == 200
            async with db.connect() as locker:
                await locker.execute(text("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE"))
                await produce_all(bootstrap, topic, good_events(50, random.Random(2)))
                produced = time.monotonic()

                async def not_ready() -> dict[str, Any] | None:
                    answer = await http.get("/readyz")
                    body: dict[str, Any] = answer.json()
                    return body if answer.status_code == 503 else None

                body = await eventually(not_ready, timeout=stall_s + 30, every=0.2)
                took = time.monotonic() - produced
                said = body["checks"]["consumer"]
                assert said.startswith("stalled: consumer "), said
                # the limit, plus a fetch and a watcher's round; never before the limit
                assert stall_s - 2 <= took <= stall_s + 5, took
                assert sample_value(await scrape(engine.base_url), "clm_consumer_stalled") >= 1
                await locker.rollback()

            async def ready_again() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await eventually(ready_again, timeout=60, every=0.5)
            await eventually(drained, timeout=60, every=0.5)
            assert sample_value(await scrape(engine.base_url), "clm_consumer_stalled") == 0
    finally:
        stack.stop_all()
        await db.dispose()
