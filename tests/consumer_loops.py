"""A consumer loop for unit tests: :class:`~clm_infra.consumer.BatchConsumer` on topic
``events`` of group ``g``, with no database and no handler, only the fakes a test gives it."""

from __future__ import annotations

from typing import Any, cast

from clm_infra.consumer import BatchConsumer, BatchPolicy


def bare_loop(
    policy: BatchPolicy, *, consumer: object = None, dlq_producer: object = None
) -> BatchConsumer:
    """A loop with ``policy`` over ``consumer`` (a fake Kafka consumer), dead-lettering to
    topic ``dlq`` through ``dlq_producer``."""
    return BatchConsumer(
        consumer=cast(Any, consumer),
        engine=cast(Any, None),
        topic="events",
        group_id="g",
        handler=cast(Any, None),
        dlq_producer=cast(Any, dlq_producer),
        dlq_topic="dlq",
        policy=policy,
    )
