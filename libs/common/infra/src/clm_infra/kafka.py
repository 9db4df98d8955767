"""Kafka client factories and the admin helpers our processes share (aiokafka).

Clients are created inside a running event loop (a lifespan or a worker), never at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from clm_infra.settings import CommonSettings, KafkaSettings

log = logging.getLogger(__name__)


def make_producer(settings: CommonSettings, *, client_id: str) -> AIOKafkaProducer:
    """An idempotent, acks=all producer: a send resolves only once the broker has the record."""
    return AIOKafkaProducer(
        **settings.kafka.client_options(),
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        max_batch_size=256 * 1024,
        compression_type="lz4" if _has_lz4() else None,
        request_timeout_ms=10_000,
        retry_backoff_ms=100,
    )


def make_consumer(
    settings: CommonSettings, *, group_id: str, client_id: str, max_poll_records: int = 500
) -> AIOKafkaConsumer:
    """A consumer for our manual-offset pattern: no auto commit, offsets live in Postgres."""
    return AIOKafkaConsumer(
        **settings.kafka.client_options(),
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=max_poll_records,
        session_timeout_ms=round(settings.kafka.session_timeout_s * 1000),
        heartbeat_interval_ms=round(settings.kafka.heartbeat_interval_s * 1000),
        max_poll_interval_ms=300_000,
        rebalance_timeout_ms=30_000,
    )


def _has_lz4() -> bool:
    try:
        import lz4  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: CommonSettings) -> list[TopicSpec]:
    """The topics CLM Stream needs, with their partition counts."""
    return [
        TopicSpec(
            settings.topics.events, settings.topics.events_partitions, {"retention.ms": "-1"}
        ),
        TopicSpec(
            settings.topics.lifecycle,
            settings.topics.lifecycle_partitions,
            {"retention.ms": str(30 * 24 * 3600 * 1000)},
        ),
        TopicSpec(settings.topics.dlq, settings.topics.dlq_partitions, {"retention.ms": "-1"}),
        TopicSpec(
            settings.topics.segments,
            settings.topics.segments_partitions,
            {"retention.ms": str(30 * 24 * 3600 * 1000)},
        ),
    ]


async def ensure_topics(settings: CommonSettings, *, timeout_s: float = 30.0) -> list[str]:
    """Create the missing topics (replication factor 1 on a single node); return those created."""
    admin = AIOKafkaAdminClient(**settings.kafka.client_options(), request_timeout_ms=10_000)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await admin.start()
            break
        except KafkaError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in topic_specs(settings) if t.name not in existing]
        if not wanted:
            return []
        response = await admin.create_topics(
            [
                NewTopic(
                    name=spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=1,
                    topic_configs=spec.config,
                )
                for spec in wanted
            ]
        )
        return _created(response.topic_errors)
    finally:
        await admin.close()


def _created(topic_errors: Iterable[tuple[Any, ...]]) -> list[str]:
    """The topics a CreateTopics answer created; one that exists already (made meanwhile by
    another process) is fine, any other refusal raises."""
    created: list[str] = []
    for name, code, *message in topic_errors:
        if code == 0:
            created.append(name)
        elif code != TopicAlreadyExistsError.errno:
            raise for_code(code)(f"creating topic {name}: {message[0] if message else code}")
    return created


async def topic_partitions(kafka: KafkaSettings, topics: Iterable[str]) -> dict[str, list[int]]:
    """The partition numbers of each topic that exists (absent topics are left out)."""
    admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=10_000)
    await admin.start()
    try:
        present = set(await admin.list_topics())
        wanted = sorted(set(topics) & present)
        described = await admin.describe_topics(wanted) if wanted else []
    finally:
        await admin.close()
    return {d["topic"]: sorted(p["partition"] for p in d["partitions"]) for d in described}


async def log_offsets(
    kafka: KafkaSettings, topics: Iterable[str], *, timeout_s: float = 10.0
) -> dict[TopicPartition, tuple[int, int]]:
    """(beginning, end) offsets of every partition of the topics that exist."""
    partitions = await asyncio.wait_for(topic_partitions(kafka, topics), timeout_s)
    tps = [TopicPartition(t, p) for t, ps in sorted(partitions.items()) for p in ps]
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(
        **kafka.client_options(), enable_auto_commit=False, request_timeout_ms=5_000
    )
    await asyncio.wait_for(consumer.start(), timeout_s)
    try:
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        return {tp: (begin[tp], end[tp]) for tp in tps}
    finally:
        await consumer.stop()


async def log_ends(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    """The end offset of each partition of ``topic`` (what a replay must reach)."""
    return {tp.partition: end for tp, (_, end) in (await log_offsets(kafka, [topic])).items()}


async def kafka_reachable(bootstrap: str, *, timeout_s: float = 2.0) -> bool:
    """True when a TCP connection to one of the bootstrap brokers opens."""
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host or "127.0.0.1", int(port)), timeout=timeout_s
            )
        except (OSError, TimeoutError, ValueError):
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False
