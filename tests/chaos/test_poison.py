"""Poison records produced straight to the events topic, between real traffic: each one lands
in the DLQ with its reason and the partitions keep flowing; a long run of nothing but poison
stops the consumer loudly instead of draining the topic into the DLQ."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.chaos.harness import ChaosStack, Ledger, check, loaded, read_dead_letters
from tests.integration.conftest import eventually

LIMIT = 1000  # BatchPolicy.max_consecutive_poison, the services' default


def poison_values(n: int, rnd: random.Random) -> list[bytes]:
    """``n`` records the stage engine cannot use: bad JSON, an unknown type, NUL bytes (raw
    and in an id), numbers too large (an amount, a score, an unknown property)."""
    base = {
        "source": "shop",
        "customer_id": "poison-customer",
        "occurred_at": "2025-01-01T00:00:00Z",
    }

    def event(type_: str, **props: Any) -> bytes:
        doc = {**base, "event_id": f"poison-{rnd.randrange(10**9)}", "type": type_}
        return orjson.dumps({**doc, "properties": props})

    kinds: list[Callable[[], bytes]] = [
        lambda: b'{"event_id": "p", "type": ',  # cut short
        lambda: event("teleport", to="mars"),
        lambda: b"\x00" * rnd.randint(1, 64),
        lambda: event("site_visit", url="/x").replace(b"poison-customer", b"poison\\u0000c"),
        lambda: event("purchase", order_id="o", amount="1e400", currency="USD"),
        lambda: event("nps_response").replace(b'"properties":{}', b'"properties":{"score":1e999}'),
        lambda: event("site_visit", url="/x").replace(
            b'"url"', b'"n":123456789012345678901234567890,"url"'
        ),
    ]
    return [kinds[i % len(kinds)]() for i in range(n)]


async def produce_poison(
    bootstrap: str, topic: str, values: list[bytes], keys: list[str], *, spread_s: float
) -> dict[tuple[int, int], str]:
    """Produce each value (keyed like real traffic), paced over ``spread_s``; where each went."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    placed: dict[tuple[int, int], str] = {}
    try:
        for value, key in zip(values, keys, strict=True):
            meta = await producer.send_and_wait(topic, value=value, key=key.encode())
            placed[(meta.partition, meta.offset)] = "undecodable"
            await asyncio.sleep(spread_s / len(values))
    finally:
        await producer.stop()
    return placed


@pytest.mark.timeout(600)
async def test_one_percent_poison_goes_to_the_dlq_and_partitions_keep_flowing(
    shared_env: dict[str, str], stack: ChaosStack
) -> None:
    rnd = random.Random(8)
    ledger = Ledger()
    async with loaded(stack, ledger, customers_per_wave=60, rate=150.0) as load:
        await load.grows(by=200)
        sent = len(ledger.sent)
        keys = [str(d.get("customer_id") or "spend") for d in ledger.sent.values()]
        poison = await produce_poison(
            shared_env["CLM_KAFKA_BOOTSTRAP"],
            shared_env["CLM_TOPIC_EVENTS"],
            poison_values(14, rnd),
            rnd.sample(keys, 14),
            spread_s=8.0,
        )
        await load.grows(by=400)
        await load.finish()
        assert len(ledger.sent) - sent > 100 * len(poison) / 2  # about 1 % poison
        await check(shared_env, ledger, metrics_url=stack.url("metrics"), poison=poison)


@pytest.mark.chaos_short
@pytest.mark.timeout(300)
async def test_a_run_of_poison_past_the_limit_stops_the_consumer_loudly(
    shared_env: dict[str, str], tmp_path: Path
) -> None:
    rnd = random.Random(9)
    bootstrap, topic = shared_env["CLM_KAFKA_BOOTSTRAP"], shared_env["CLM_TOPIC_EVENTS"]
    run = LIMIT + 300
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        pending = [
            await producer.send(topic, value=v, key=b"one-partition", partition=0)
            for v in poison_values(run, rnd)
        ]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    stack = ChaosStack(shared_env, tmp_path / "logs")
    engine = stack.start("stage-engine")
    try:
        async with httpx.AsyncClient(base_url=engine.base_url, timeout=10) as http:

            async def stopped() -> dict[str, Any] | None:
                answer = await http.get("/readyz")
                body: dict[str, Any] = answer.json()
                return (
                    body
                    if answer.status_code == 503 and body["checks"]["consumer"] == "down"
                    else None
                )

            await eventually(stopped, timeout=120, every=0.5)
            assert (await http.get("/healthz")).status_code == 200  # still serving, not dead
        assert any("poison records in a row" in line for line in engine.log_tail(200))
        dead = await read_dead_letters(bootstrap, shared_env["CLM_TOPIC_DLQ"])
        assert 0 < len(dead) <= LIMIT < run  # stopped, not drained into the DLQ
    finally:
        stack.stop_all()
