"""``clm status`` says why it is not healthy: a stalled consumer is named, with its lane."""

from __future__ import annotations

import httpx

from clm_cli.commands.status import ServiceStatus, Status, render, service_status
from clm_cli.settings import Service

STALL = "stalled: consumer 0 partition 3 (lag 12) since 2026-12-07T12:00:00Z (130 s)"


async def test_a_stalled_lane_makes_the_status_unhealthy_and_says_so() -> None:
    def readyz(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            503,
            json={
                "status": "not ready",
                "checks": {"postgres": "ok", "kafka": "ok", "consumer": STALL},
            },
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(readyz)) as client:
        engine = await service_status(
            client, Service("stage-engine", "http://engine", "CLM_STAGE_ENGINE_URL")
        )
    status = Status(
        services=[ServiceStatus("ingest", "http://ingest", "ready"), engine],
        kafka="ok",
        postgres="ok",
    )
    assert not status.healthy
    assert status.problems == [f"stage-engine: consumer {STALL}"]
    assert render(status).endswith(f"NOT HEALTHY\nstage-engine: consumer {STALL}")


def test_healthy_has_no_problems() -> None:
    status = Status(
        services=[ServiceStatus("metrics", "http://m", "ready", {"consumer": "ok"})],
        kafka="ok",
        postgres="ok",
    )
    assert status.healthy
    assert status.problems == []
    assert render(status).endswith("healthy")


def test_down_parts_are_named() -> None:
    status = Status(
        services=[ServiceStatus("ingest", "http://i", "down", {"error": "ConnectError"})],
        kafka="unreachable (KafkaConnectionError)",
        postgres="ok",
    )
    assert status.problems == ["ingest: down", "kafka: unreachable (KafkaConnectionError)"]
