"""The ingest while its broker dies and comes back: 503 + Retry-After, never 2xx, then recovery.

A broker of its own (not the shared test broker), SIGKILLed under the running ingest.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from clm_devstack.kafka import start_kafka, stop_kafka
from clm_devstack.services import start_service
from clm_infra.kafka import ensure_topics
from clm_infra.settings import CommonSettings, KafkaSettings, TopicSettings
from tests.e2e.conftest import free_port, own_kafka
from tests.factories import event_doc
from tests.integration.conftest import read_topic
from tests.keys import WRITE


async def test_broker_killed_under_the_ingest(prepared_env: dict[str, str], tmp_path: Path) -> None:
    cfg = own_kafka(tmp_path / "kafka")
    broker = start_kafka(cfg)
    env = {
        **prepared_env,
        "CLM_KAFKA_BOOTSTRAP": cfg.bootstrap,
        "CLM_INGEST_PUBLISH_TIMEOUT_S": "2",
    }
    ingest = None
    try:
        await ensure_topics(
            CommonSettings(
                kafka=KafkaSettings(bootstrap=cfg.bootstrap),
                topics=TopicSettings(
                    events=env["CLM_TOPIC_EVENTS"],
                    lifecycle=env["CLM_TOPIC_LIFECYCLE"],
                    dlq=env["CLM_TOPIC_DLQ"],
                    events_partitions=3,
                ),
            )
        )
        ingest = start_service("ingest", env, tmp_path, free_port())
        url = f"{ingest.base_url}/v1/events"
        async with httpx.AsyncClient(timeout=30) as http:
            before = event_doc("site_visit", source=None)
            assert (await http.post(url, json=before, headers=WRITE)).status_code == 202

            os.kill(broker.pid, signal.SIGKILL)
            for _ in range(3):
                started = time.monotonic()
                r = await http.post(url, json=event_doc("site_visit", source=None), headers=WRITE)
                elapsed = time.monotonic() - started
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "5"
                assert elapsed < 10, f"a request hung for {elapsed:.1f}s while the broker was away"

            start_kafka(cfg)  # same data, same ports: the broker comes back
            after = event_doc("site_visit", source=None)
            deadline = time.monotonic() + 60
            status = 0
            while time.monotonic() < deadline:
                status = (await http.post(url, json=after, headers=WRITE)).status_code
                if status == 202:
                    break
                assert status == 503
            assert status == 202, "the ingest did not recover after the broker came back"

        records = await read_topic(cfg.bootstrap, env["CLM_TOPIC_EVENTS"], expect=2)
        ids = {r.value for r in records}
        assert any(before["event_id"].encode() in v for v in ids)
        assert any(after["event_id"].encode() in v for v in ids)
    finally:
        if ingest is not None:
            ingest.stop()
        stop_kafka(cfg)
