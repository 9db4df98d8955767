"""A generated journey set through the real stack (stage engine + metrics on real Kafka and
Postgres): every KPI of every window, filtered and not, equals the brute-force truth exactly.

Distinct counts (unique visitors, purchasing customers, repeat purchasers) are exact sets, so
they and the KPIs derived from them are compared for equality like every other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from clm_domain.events import dump_event, parse_event
from clm_domain.kpis import WINDOWS
from clm_infra.settings import CommonSettings
from clm_metrics.app import create_app as metrics_app
from clm_metrics.settings import MetricsSettings
from clm_simulator.journeys import generate
from clm_stage_engine.app import create_app as engine_app
from clm_stage_engine.settings import StageEngineSettings
from tests.integration.apps import app_client, running
from tests.integration.conftest import eventually, produce
from tests.keys import READ
from tests.kpi_truth import replay, truth, truth_cohorts, truth_map


@pytest.fixture
async def metrics(common: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    engine = engine_app(StageEngineSettings())
    app = metrics_app(MetricsSettings())
    async with running(engine), app_client(app, "http://metrics") as c:
        yield c


def wire(doc: dict[str, Any], now: datetime) -> tuple[bytes, bytes]:
    event = parse_event(doc, now=now)
    key = event.customer_id or event.anonymous_id or f"spend:{doc['properties']['channel']}"
    return key.encode(), dump_event(event)


async def test_every_kpi_of_every_window_equals_the_truth(
    metrics: httpx.AsyncClient, common: CommonSettings
) -> None:
    now = datetime.now(UTC)
    docs = generate(20261123, customers=80, now=now, days=100)
    steps = replay(docs, now=now)
    await produce(common.kafka.bootstrap, common.topics.events, [wire(d, now) for d in docs])
    everything = {
        "from": (now - timedelta(days=200)).isoformat(),
        "to": (now + timedelta(days=1)).isoformat(),
    }

    async def all_counted() -> dict[str, Any] | None:
        body = (await metrics.get("/v1/kpis", params=everything, headers=READ)).json()
        return body if body["events"] == len(docs) else None

    await eventually(all_counted, timeout=90)

    sources = sorted({d["source"] for d in docs})
    channels = sorted({d.get("channel", "") for d in docs} - {""})
    filters: list[dict[str, str]] = [{}, {"source": sources[0]}, {"channel": channels[0]}]
    ranges: list[dict[str, str]] = [{"window": w} for w in WINDOWS]
    ranges.append(
        {
            "from": (now - timedelta(days=45, minutes=17)).isoformat(),
            "to": (now - timedelta(days=3, minutes=5)).isoformat(),
        }
    )
    compared = 0
    for rng in ranges:
        for flt in filters:
            body = (await metrics.get("/v1/kpis", params={**rng, **flt}, headers=READ)).json()
            start, end = datetime.fromisoformat(body["from"]), datetime.fromisoformat(body["to"])
            want = truth(
                steps, start, end, now=now, source=flt.get("source"), channel=flt.get("channel")
            )
            got = {k: v for k, v in body.items() if k not in ("window", "from", "to")}
            assert got == want, (rng, flt)
            lmap = (
                await metrics.get("/v1/lifecycle/map", params={**rng, **flt}, headers=READ)
            ).json()
            expected = truth_map(
                steps, start, end, source=flt.get("source"), channel=flt.get("channel")
            )
            assert lmap["transitions"] == expected["transitions"]
            assert lmap["median_seconds_in_stage"] == expected["median_seconds_in_stage"]
            assert lmap["customers_by_stage"] == want["customers_by_stage"]
            compared += 1
    assert compared == len(ranges) * len(filters)
    assert want_nontrivial(truth(steps, *bounds(now, timedelta(days=90)), now=now))

    for period in ("month", "week"):
        body = (
            await metrics.get("/v1/cohorts/retention", params={"period": period}, headers=READ)
        ).json()
        assert body["cohorts"] == truth_cohorts(steps, period)

    series = (
        await metrics.get(
            "/v1/kpis/purchases/series", params={"window": "7d", "step": "1d"}, headers=READ
        )
    ).json()
    for point in series["points"]:
        p_start, p_end = datetime.fromisoformat(point["from"]), datetime.fromisoformat(point["to"])
        assert point["value"] == truth(steps, p_start, p_end, now=now)["purchases"]
    assert len(series["points"]) == 8


def bounds(now: datetime, span: timedelta) -> tuple[datetime, datetime]:
    from clm_domain.kpis import window_bounds

    return window_bounds(now, span)


def want_nontrivial(kpis: dict[str, Any]) -> bool:
    """The journey set exercises the formulas (no all-zero comparison)."""
    return (
        all(
            kpis[k]
            for k in (
                "site_visits",
                "leads",
                "new_customers",
                "purchases",
                "refunds",
                "reviews",
                "nps_responses",
                "csat_answers",
                "converted_leads",
                "repeat_purchases",
            )
        )
        and kpis["marketing_spend"] != "0.00"
    )


async def test_unknown_kpi_series_and_bad_ranges_are_refused(metrics: httpx.AsyncClient) -> None:
    assert (await metrics.get("/v1/kpis/nope/series", headers=READ)).status_code == 404
    both = await metrics.get(
        "/v1/kpis",
        params={"window": "1h", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"},
        headers=READ,
    )
    assert both.status_code == 422
    many = await metrics.get(
        "/v1/kpis/purchases/series", params={"window": "90d", "step": "1m"}, headers=READ
    )
    assert many.status_code == 422
    assert many.json()["errors"][0]["field"] == "step"
    assert (
        await metrics.get("/v1/cohorts/retention", params={"period": "year"}, headers=READ)
    ).status_code == 422
    assert (await metrics.get("/v1/lifecycle/map")).status_code == 401


async def test_a_late_first_purchase_counts_one_new_customer_and_one_repeat(
    metrics: httpx.AsyncClient, common: CommonSettings
) -> None:
    """The purchase applied first was published as the customer's first; an earlier one
    arrives later. The engine's correction record makes the metrics count what the events say
    in event-time order: one new customer, one repeat purchase (not two new customers)."""
    now = datetime.now(UTC)
    window = {"window": "30d"}

    def purchase(event_id: str, days_ago: int) -> dict[str, Any]:
        return {
            "event_id": event_id,
            "type": "purchase",
            "customer_id": "late-buyer",
            "occurred_at": (now - timedelta(days=days_ago)).isoformat(),
            "source": "shop",
            "channel": "email",
            "properties": {"order_id": event_id, "amount": "10.00", "currency": "USD"},
        }

    async def counted(events: int) -> dict[str, Any] | None:
        body = (await metrics.get("/v1/kpis", params=window, headers=READ)).json()
        return body if body["events"] == events else None

    await produce(common.kafka.bootstrap, common.topics.events, [wire(purchase("p2", 5), now)])
    first = await eventually(lambda: counted(1), timeout=60)
    assert (first["new_customers"], first["repeat_purchases"]) == (1, 0)

    await produce(common.kafka.bootstrap, common.topics.events, [wire(purchase("p1", 10), now)])

    async def corrected() -> dict[str, Any] | None:
        body = await counted(2)
        return body if body and body["repeat_purchases"] == 1 else None

    body = await eventually(corrected, timeout=60)
    assert (body["purchases"], body["new_customers"], body["repeat_purchases"]) == (2, 1, 1)
