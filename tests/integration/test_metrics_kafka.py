"""The metrics service on real Kafka and Postgres: exact counts, once, over HTTP and /metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from clm_infra.settings import CommonSettings
from tests.integration.conftest import eventually, produce
from tests.keys import READ


def lifecycle(
    record_id: str,
    type_: str,
    *,
    minutes_ago: int = 1,
    amount: str = "10.00",
    currency: str = "USD",
    before: str | None = None,
    after: str = "reach",
    first: bool = False,
) -> tuple[bytes, bytes]:
    at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    props = {"order_id": "o", "amount": amount, "currency": currency} if type_ == "purchase" else {}
    doc: dict[str, Any] = {
        "schema": "clm.lifecycle.v1",
        "record_id": record_id,
        "event": {
            "event_id": record_id,
            "type": type_,
            "source": "shop",
            "channel": "email",
            "customer_id": "c",
            "occurred_at": at.isoformat(),
            "properties": props,
        },
        "customer": {},
        "stage_before": before,
        "stage_after": after,
        "transition": None,
        "first_purchase": first,
        "repeat_purchase": False,
        "reactivation": False,
    }
    return b"c", orjson.dumps(doc)


async def test_kpis_count_each_record_once(
    metrics_app: httpx.AsyncClient, common: CommonSettings
) -> None:
    records = [
        lifecycle("v1", "site_visit", after="reach"),
        lifecycle("p1", "purchase", amount="19.99", before="reach", after="conversion", first=True),
        lifecycle("p2", "purchase", amount="5.01", before=None, after="conversion", first=True),
        lifecycle("old", "purchase", minutes_ago=60 * 30, amount="100.00", after="conversion"),
    ]
    await produce(common.kafka.bootstrap, common.topics.lifecycle, records + records[:2])

    async def kpis() -> dict[str, Any] | None:
        body = (await metrics_app.get("/v1/kpis?window=24h", headers=READ)).json()
        return body if body["events"] == 3 else None

    body = await eventually(kpis)
    assert body["purchases"] == 2
    assert body["revenue"] == "25.00"
    assert body["average_order_value"] == "12.50"
    assert body["new_customers"] == 2
    assert body["site_visits"] == 1
    assert body["customers_by_stage"] == {
        "reach": 0,
        "acquisition": 0,
        "conversion": 3,
        "retention": 0,
        "loyalty": 0,
        "at_risk": 0,
        "churned": 0,
    }
    week = (await metrics_app.get("/v1/kpis?window=7d", headers=READ)).json()
    assert week["purchases"] == 3
    assert week["revenue"] == "125.00"
    filtered = (await metrics_app.get("/v1/kpis?window=7d&channel=social", headers=READ)).json()
    assert filtered["purchases"] == 0
    assert filtered["average_order_value"] is None

    async def gauge() -> str | None:
        text = (await metrics_app.get("/metrics")).text
        return text if 'clm_kpi_purchases{window="24h"} 2.0' in text else None

    exposition = await eventually(gauge)
    assert 'clm_kpi_revenue{window="7d"} 125.0' in exposition
    assert "process_resident_memory_bytes" in exposition


async def test_bad_windows_and_missing_tokens_are_refused(metrics_app: httpx.AsyncClient) -> None:
    bad = await metrics_app.get("/v1/kpis?window=fortnight", headers=READ)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "window"
    assert (await metrics_app.get("/v1/kpis")).status_code == 401
