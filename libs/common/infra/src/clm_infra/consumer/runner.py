"""One supervised attempt of a loop, with the Kafka clients it needs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_infra.consumer.handler import Handler
from clm_infra.consumer.loop import BatchConsumer
from clm_infra.consumer.policy import BatchPolicy
from clm_infra.kafka import make_consumer, make_producer
from clm_infra.settings import CommonSettings


async def run_batch_consumer(
    settings: CommonSettings,
    engine: AsyncEngine,
    *,
    name: str,
    topic: str,
    group_id: str,
    handler: Handler,
    policy: BatchPolicy,
    register: Callable[[BatchConsumer | None], None],
    stopping: asyncio.Event,
    lanes_stop: asyncio.Event | None = None,
) -> None:
    """One supervised attempt: build the consumer and its DLQ producer, run the loop until it
    stops or fails, close both. ``register`` gets the running loop (to stop it on shutdown),
    then ``None``."""
    producer = make_producer(settings, client_id=f"{name}-dlq")
    consumer = make_consumer(
        settings, group_id=group_id, client_id=name, max_poll_records=policy.max_records
    )
    try:
        await producer.start()
        await consumer.start()
        loop = BatchConsumer(
            consumer=consumer,
            engine=engine,
            topic=topic,
            group_id=group_id,
            handler=handler,
            dlq_producer=producer,
            dlq_topic=settings.topics.dlq,
            policy=policy,
            lanes_stop=lanes_stop,
        )
        register(loop)
        if not stopping.is_set():
            await loop.run()
    finally:
        register(None)
        await _stop_quietly(consumer, producer)


async def _stop_quietly(*clients: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    for client in clients:
        with contextlib.suppress(Exception):
            await client.stop()
