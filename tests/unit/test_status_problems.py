"""``clm status`` says why it is not healthy: a stalled consumer is named, with its lane."""

from __future__ import annotations

from typing import Any

import httpx

from clm_cli.commands import status as status_module
from clm_cli.commands.status import (
    Lag,
    ServiceStatus,
    Status,
    compare_stages,
    render,
    service_status,
    stage_differences,
)
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


ENGINE = {"reach": 3, "conversion": 8, "retention": 0}


def test_equal_stage_counts_are_no_problem() -> None:
    assert stage_differences(ENGINE, dict(ENGINE)) == []


def test_differing_stage_counts_name_the_stages_of_both() -> None:
    metrics = {"reach": 3, "conversion": 9, "retention": -1}
    assert stage_differences(ENGINE, metrics) == [
        "metrics service: retention has -1 customers (below zero)",
        "stage counts differ: engine conversion=8 retention=0, metrics conversion=9 retention=-1",
    ]
    # a stage only one side names counts as 0 on the other
    assert stage_differences({"reach": 1}, {"reach": 1, "loyalty": 2}) == [
        "stage counts differ: engine loyalty=0, metrics loyalty=2"
    ]


def test_a_negative_count_is_a_problem_even_when_both_agree() -> None:
    both = {"reach": -2}
    assert stage_differences(both, both) == [
        "stage engine: reach has -2 customers (below zero)",
        "metrics service: reach has -2 customers (below zero)",
    ]


def quiet_status(lag: int = 0, outbox: int = 0) -> Status:
    return Status(
        services=[ServiceStatus("metrics", "http://m", "ready")],
        kafka="ok",
        postgres="ok",
        lag=[Lag("clm-metrics", "clm.lifecycle.v1", 0, 5, 5 + lag, lag)],
        outbox={"records": outbox, "oldest_age_s": None},
    )


def reads(*answers: tuple[dict[str, int], dict[str, int]]) -> Any:
    pending = list(answers)

    async def stage_counts(settings: Any) -> tuple[dict[str, int], dict[str, int]]:
        return pending.pop(0)

    return stage_counts


async def test_a_stable_difference_when_quiet_is_unhealthy(monkeypatch: Any) -> None:
    off = (ENGINE, {**ENGINE, "conversion": 9})
    monkeypatch.setattr(status_module, "stage_counts", reads(off, off))
    status = quiet_status()
    await compare_stages(None, status, recheck_s=0)  # type: ignore[arg-type]
    assert not status.healthy
    assert status.problems == ["stage counts differ: engine conversion=8, metrics conversion=9"]
    assert "NOT HEALTHY" in render(status)


async def test_a_difference_that_moves_between_reads_is_not_judged(monkeypatch: Any) -> None:
    moved = (ENGINE, {**ENGINE, "conversion": 7})
    monkeypatch.setattr(
        status_module, "stage_counts", reads((ENGINE, {**ENGINE, "conversion": 9}), moved)
    )
    status = quiet_status()
    await compare_stages(None, status, recheck_s=0)  # type: ignore[arg-type]
    assert status.healthy
    assert "moved" in status.stages["note"]


async def test_a_busy_pipeline_is_not_compared(monkeypatch: Any) -> None:
    monkeypatch.setattr(status_module, "stage_counts", reads())  # any read would fail
    for busy in (quiet_status(lag=3), quiet_status(outbox=2)):
        assert not busy.quiet
        await compare_stages(None, busy, recheck_s=0)  # type: ignore[arg-type]
        assert busy.healthy
        assert busy.stages["note"].startswith("not compared")
    agreeing = quiet_status()
    monkeypatch.setattr(status_module, "stage_counts", reads((ENGINE, dict(ENGINE))))
    await compare_stages(None, agreeing, recheck_s=0)  # type: ignore[arg-type]
    assert agreeing.healthy
    assert agreeing.stages == {"engine": ENGINE, "metrics": ENGINE}
    assert "stage counts: engine and metrics agree" in render(agreeing)
