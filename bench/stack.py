"""The settings a benchmark's stack runs with: its database, its own topics and groups."""

from __future__ import annotations

import os
import uuid

from clm_infra.kafka import ensure_topics
from tests.e2e.conftest import settings_of


async def stack_env(db_url: str, **overrides: str) -> dict[str, str]:
    """``CLM_*`` settings on the broker ``make bench`` started with fresh topic and group names
    (``overrides`` on top), the topics created."""
    tag = uuid.uuid4().hex[:8]
    env = {
        "CLM_ENV": "test",
        "CLM_DATABASE_URL": db_url,
        "CLM_KAFKA_BOOTSTRAP": os.environ["CLM_KAFKA_BOOTSTRAP"],
        "CLM_TOPIC_EVENTS": f"bench{tag}.events",
        "CLM_TOPIC_LIFECYCLE": f"bench{tag}.lifecycle",
        "CLM_TOPIC_DLQ": f"bench{tag}.dlq",
        "CLM_TOPIC_SEGMENTS": f"bench{tag}.segments",
        "CLM_TOPIC_SEGMENTS_PARTITIONS": "6",
        "CLM_TOPIC_EVENTS_PARTITIONS": "6",
        "CLM_TOPIC_LIFECYCLE_PARTITIONS": "6",
        "CLM_STAGE_ENGINE_GROUP": f"bench{tag}.stage-engine",
        "CLM_METRICS_GROUP": f"bench{tag}.metrics",
        "CLM_STAGE_ENGINE_SWEEP_S": "3600",
        "CLM_LOG_LEVEL": "WARNING",
        # the bench is one client at full speed: the request limits would measure themselves
        "CLM_RATE_LIMIT_KEY_PER_S": "0",
        "CLM_RATE_LIMIT_ADDRESS_PER_S": "0",
        **overrides,
    }
    await ensure_topics(settings_of(env))
    return env
