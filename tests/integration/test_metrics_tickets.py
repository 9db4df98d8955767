"""Open support tickets on real Postgres, through the write path: counted per ticket, at each
window's end, never below zero — solves of tickets opened before they were tracked, a solve
delivered before its open and twice, a repeated open, a merge and an erasure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from clm_infra.db import create_engine
from clm_metrics import service
from clm_metrics.formulas import compute_kpis
from clm_metrics.handler import LifecycleHandler
from tests.records import unkeyed

NOW = datetime(2026, 11, 23, 12, 34, tzinfo=UTC)


def ticket(record_id: str, who: str, tid: str, status: str, minutes_ago: int) -> dict[str, Any]:
    return {
        "schema": "clm.lifecycle.v1",
        "record_id": record_id,
        "event": {
            "event_id": record_id,
            "type": "support_ticket",
            "source": "zendesk",
            "channel": "email",
            "customer_id": who,
            "occurred_at": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
            "properties": {"ticket_id": tid, "status": status},
        },
        "customer": {"customer_id": who},
        "stage_before": "reach",
        "stage_after": "reach",
        "transition": None,
        "first_purchase": False,
        "repeat_purchase": False,
        "reactivation": False,
    }


def leaving(kind: str, who: str, **extra: Any) -> dict[str, Any]:
    return {
        "schema": "clm.lifecycle.v1",
        "kind": kind,
        "record_id": f"{kind}:{who}",
        "customer_id": who,
        "event": None,
        "customer": None,
        "stage_before": None,
        "stage_after": None,
        **extra,
    }


async def test_open_tickets_are_counted_per_ticket_and_never_below_zero(
    database_url: str,
) -> None:
    engine = create_engine(database_url, pool_size=2)
    handler = LifecycleHandler()

    async def consume(*docs: dict[str, Any]) -> None:
        async with engine.begin() as conn:
            await handler(conn, unkeyed(docs))

    async def kpis(
        minutes_ago: int, source: str | None = None, channel: str | None = None
    ) -> dict[str, Any]:
        end = NOW - timedelta(minutes=minutes_ago)
        inputs = await service.window_inputs(
            engine,
            end - timedelta(hours=24),
            end,
            NOW,
            distinct=False,
            source=source,
            channel=channel,
        )
        return compute_kpis(inputs, reporting_currency="USD")

    async def open_at(minutes_ago: int) -> int:
        return int((await kpis(minutes_ago))["open_support_tickets"])

    try:
        # tickets opened before they were tracked: their solves close nothing
        await consume(*(ticket(f"old-{i}", "a", f"old-{i}", "solved", 55) for i in range(4)))
        assert await open_at(0) == 0
        # t1's solve arrives before its open, and twice; t2 opens twice (the earlier wins)
        await consume(ticket("s1", "a", "t1", "solved", 20), ticket("s1b", "a", "t1", "solved", 22))
        await consume(ticket("o1", "a", "t1", "opened", 50), ticket("o2", "a", "t2", "opened", 30))
        await consume(ticket("o2b", "a", "t2", "opened", 40), ticket("o3", "b", "t3", "opened", 10))
        # the same record redelivered counts once
        await consume(ticket("o3", "b", "t3", "opened", 10))
        assert [await open_at(m) for m in (60, 45, 35, 21, 15, 5, 0)] == [0, 1, 2, 1, 1, 2, 2]
        week = await kpis(0)
        assert week["support_tickets_opened"] == 4  # the events in the window, as before
        assert week["support_tickets_solved"] == 6
        assert (await kpis(0, source="zendesk"))["open_support_tickets"] == 2
        assert (await kpis(0, channel="sms"))["open_support_tickets"] == 0

        # b merges into a (t3 moves with it), then a's t3 is solved; then a is erased
        await consume(leaving("identity_merge", "b", merged_into="a"))
        await consume(ticket("s3", "a", "t3", "solved", 5))
        assert [await open_at(m) for m in (15, 5, 0)] == [1, 2, 1]
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text("SELECT customer_id, ticket_id FROM metrics_tickets ORDER BY 1, 2")
                )
            ).all()
        assert [tuple(r) for r in rows] == [
            ("a", "old-0"),
            ("a", "old-1"),
            ("a", "old-2"),
            ("a", "old-3"),
            ("a", "t1"),
            ("a", "t2"),
            ("a", "t3"),
        ]
        await consume(leaving("erasure", "a", mode="erase"))
        assert [await open_at(m) for m in (60, 45, 15, 0)] == [0, 0, 0, 0]
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM metrics_tickets")) == 0
    finally:
        await engine.dispose()
