"""One event the whole way: HTTP → ingest → Kafka → stage engine → Postgres → metrics → HTTP.

Real Kafka, real Postgres, the three real service processes.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from clm_devstack.services import start_service
from tests.e2e.conftest import Stack, free_port
from tests.factories import event_doc
from tests.integration.conftest import eventually
from tests.keys import READ, WRITE


async def test_a_purchase_travels_the_whole_way_and_counts_once(stack: Stack) -> None:
    cid = f"cust-{uuid.uuid4().hex[:8]}"
    purchase = event_doc("purchase", customer_id=cid, source=None, amount="42.00", currency="USD")
    purchase["occurred_at"] = _now_iso()
    async with httpx.AsyncClient(timeout=10) as http:
        posted = await http.post(f"{stack.ingest}/v1/events", json=purchase, headers=WRITE)
        assert posted.status_code == 202, posted.text

        async def stage() -> dict[str, Any] | None:
            r = await http.get(f"{stack.stage_engine}/v1/customers/{cid}", headers=READ)
            return r.json() if r.status_code == 200 else None

        customer = await eventually(stage, timeout=20)
        assert customer["stage"] == "conversion"
        assert customer["purchases"] == 1
        assert customer["stage_entered_at"]

        async def kpis() -> dict[str, Any] | None:
            r = await http.get(f"{stack.metrics}/v1/kpis?window=24h", headers=READ)
            body = r.json()
            return body if body["purchases"] >= 1 else None

        body = await eventually(kpis, timeout=20)
        assert body["purchases"] == 1
        assert body["revenue"] == "42.00"
        assert body["customers_by_stage"]["conversion"] == 1

        async def gauge() -> float | None:
            text = (await http.get(f"{stack.metrics}/metrics")).text
            match = re.search(r'^clm_kpi_purchases\{window="24h"\} (\S+)$', text, re.M)
            return float(match.group(1)) if match and float(match.group(1)) >= 1 else None

        assert await eventually(gauge, timeout=20) == 1.0
        for service in (stack.ingest, stack.stage_engine, stack.metrics):
            exposition = (await http.get(f"{service}/metrics")).text
            assert "process_resident_memory_bytes" in exposition
            assert (await http.get(f"{service}/healthz")).json() == {"status": "ok"}
            ready = await http.get(f"{service}/readyz")
            assert ready.status_code == 200, ready.text

        # the same event_id again: accepted (idempotent), and nothing changes downstream
        again = await http.post(f"{stack.ingest}/v1/events", json=purchase, headers=WRITE)
        assert again.status_code == 202
        marker_id = f"marker-{uuid.uuid4().hex[:8]}"
        marker = event_doc("site_visit", customer_id=marker_id, source=None)
        marker["occurred_at"] = _now_iso()
        assert (await http.post(f"{stack.ingest}/v1/events", json=marker, headers=WRITE)).is_success

        async def marker_counted() -> dict[str, Any] | None:
            r = await http.get(f"{stack.metrics}/v1/kpis?window=24h", headers=READ)
            b = r.json()
            return b if b["site_visits"] == 1 else None

        after = await eventually(marker_counted, timeout=20)
        assert after["purchases"] == 1
        assert after["revenue"] == "42.00"
        assert after["events"] == 2
        customer_after = (
            await http.get(f"{stack.stage_engine}/v1/customers/{cid}", headers=READ)
        ).json()
        assert customer_after == customer
        history = (
            await http.get(f"{stack.stage_engine}/v1/customers/{cid}/history", headers=READ)
        ).json()
        assert [t["to_stage"] for t in history["transitions"]] == ["conversion"]


async def test_bad_input_is_a_problem_naming_the_field(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        bad = event_doc("review", rating=9, source=None)
        r = await http.post(f"{stack.ingest}/v1/events", json=bad, headers=WRITE)
        assert r.status_code == 422
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["errors"] == [
            {"field": "properties.rating", "message": "Input should be less than or equal to 5"}
        ]


async def test_kafka_down_means_503_with_retry_after(
    prepared_env: dict[str, str], tmp_path: Path
) -> None:
    dead_broker = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = {**prepared_env, "CLM_KAFKA_BOOTSTRAP": dead_broker, "CLM_INGEST_PUBLISH_TIMEOUT_S": "2"}
    ingest = start_service("ingest", env, tmp_path, free_port())
    try:
        async with httpx.AsyncClient(timeout=15) as http:
            r = await http.post(
                f"{ingest.base_url}/v1/events", json=event_doc(source=None), headers=WRITE
            )
            assert r.status_code == 503
            assert r.headers["retry-after"] == "5"
            assert r.headers["content-type"] == "application/problem+json"
            ready = await http.get(f"{ingest.base_url}/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["kafka"] == "down"
    finally:
        ingest.stop()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()
