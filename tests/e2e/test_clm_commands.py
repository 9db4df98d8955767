"""``clm`` as an operator runs it (a subprocess), against the whole stack as real processes.

Each command's happy path and its error paths: an unknown customer, a bad key, a service or
Kafka that is down, a malformed argument.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text

from clm_infra.db import create_engine
from tests.e2e.conftest import Stack, free_port
from tests.integration.conftest import eventually, produce, read_topic
from tests.keys import ADMIN_KEY, READ, READ_TOKEN, WRITE, WRITE_KEY


@dataclass(frozen=True)
class Run:
    status: int
    out: str
    err: str

    def json(self) -> Any:
        return orjson.loads(self.out)

    def failed(self, status: int, message: str) -> None:
        """Assert the command exited with ``status`` and said ``message`` on stderr."""
        assert self.status == status, self.err
        assert message in self.err


async def clm(stack: Stack, *args: str, **env: str) -> Run:
    """``python -m clm_cli ARGS`` with the stack's settings, overridden by ``env``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clm_cli",
        *args,
        env={
            **os.environ,
            **stack.env,
            "CLM_INGEST_URL": stack.ingest,
            "CLM_STAGE_ENGINE_URL": stack.stage_engine,
            "CLM_METRICS_URL": stack.metrics,
            "CLM_READ_TOKEN": READ_TOKEN,
            "CLM_WRITE_KEY": WRITE_KEY,
            "CLM_ADMIN_KEY": ADMIN_KEY,
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def event(type_: str, customer: str, at: datetime, **properties: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": type_,
        "customer_id": customer,
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "channel": "email",
        "properties": properties,
    }


def purchase(customer: str, at: datetime, order_id: str, amount: str) -> dict[str, Any]:
    """An order in US dollars."""
    return event("purchase", customer, at, order_id=order_id, amount=amount, currency="USD")


async def post(stack: Stack, *events: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=stack.ingest) as client:
        response = await client.post(
            "/v1/events/batch",
            json={"events": list(events)},
            headers=WRITE,
        )
    assert response.status_code == 202, response.text


async def stage_of(stack: Stack, customer: str) -> str | None:
    """The stage over HTTP (polling through the CLI would pay its start-up every time)."""
    async with httpx.AsyncClient(base_url=stack.stage_engine) as client:
        response = await client.get(f"/v1/customers/{customer}", headers=READ)
    return str(response.json()["stage"]) if response.status_code == 200 else None


async def purchases_counted(stack: Stack) -> int:
    async with httpx.AsyncClient(base_url=stack.metrics) as client:
        response = await client.get("/v1/kpis", params={"window": "7d"}, headers=READ)
    return int(response.json()["purchases"])


async def test_customer_stages_and_kpis_commands(stack: Stack) -> None:
    now = datetime.now(UTC) - timedelta(hours=1)
    await post(
        stack,
        event("signup", "c-1", now - timedelta(minutes=30), plan="free"),
        purchase("c-1", now - timedelta(minutes=20), "o1", "20.00"),
        purchase("c-1", now - timedelta(minutes=10), "o2", "30.00"),
        event("signup", "c-2", now, plan="free"),
    )

    async def settled() -> bool:
        return (
            await stage_of(stack, "c-1") == "retention"
            and await stage_of(stack, "c-2") == "acquisition"
        )

    await eventually(settled, timeout=30, every=0.5)

    shown = await clm(stack, "customer", "show", "c-1", "--history")
    assert shown.status == 0, shown.err
    assert "retention" in shown.out
    assert "repeat purchase" in shown.out  # the history's reason column
    assert "50.00" in shown.out  # revenue

    listed = await clm(stack, "customer", "list", "--stage", "retention", "--json")
    assert [c["customer_id"] for c in listed.json()["customers"]] == ["c-1"]

    stages = await clm(stack, "stages", "--json")
    assert stages.json()["stages"]["retention"] == 1
    assert stages.json()["stages"]["acquisition"] == 1
    table = await clm(stack, "stages")
    assert "total" in table.out
    assert "50.0%" in table.out

    await eventually(lambda: _equals(purchases_counted(stack), 2), timeout=30, every=0.2)
    kpis = (await clm(stack, "kpis", "--window", "7d", "--json")).json()
    assert kpis["purchases"] == 2
    assert kpis["revenue"] == "50.00"
    assert kpis["customers_by_stage"]["retention"] == 1
    people = await clm(stack, "kpis", "--window", "7d")
    assert people.status == 0
    assert "average_order_value" in people.out
    assert "25.00" in people.out

    unknown = await clm(stack, "customer", "show", "nobody")
    unknown.failed(1, "unknown customer 'nobody'")

    bad_window = await clm(stack, "kpis", "--window", "forever")
    bad_window.failed(1, "window")

    await bad_key_and_services_down(stack)  # one stack for both: starting one costs seconds


async def bad_key_and_services_down(stack: Stack) -> None:
    refused = await clm(stack, "stages", "--token", "not-a-key")
    refused.failed(2, "refused the read key (401")
    assert "CLM_READ_TOKEN" in refused.err

    down = await clm(stack, "kpis", CLM_METRICS_URL=f"http://127.0.0.1:{free_port()}")
    down.failed(2, "cannot reach the metrics service")
    assert "Traceback" not in down.err

    no_kafka = await clm(stack, "dlq", "list", CLM_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    no_kafka.failed(2, "cannot reach Kafka")

    no_db = await clm(
        stack,
        "keys",
        "list",
        CLM_DATABASE_URL=f"postgresql+asyncpg://clm:clm@127.0.0.1:{free_port()}/clm",
    )
    no_db.failed(2, "cannot reach Postgres")


async def test_erase_needs_yes_and_an_admin_key(stack: Stack) -> None:
    await post(stack, event("signup", "gone", datetime.now(UTC), plan="free"))
    await eventually(lambda: stage_of(stack, "gone"), timeout=30, every=0.5)

    unsure = await clm(stack, "customer", "erase", "gone")
    unsure.failed(1, "--yes")
    read_only = await clm(stack, "customer", "erase", "gone", "--yes", CLM_ADMIN_KEY=READ_TOKEN)
    assert read_only.status == 2
    write_only = await clm(stack, "customer", "erase", "gone", "--yes", CLM_ADMIN_KEY=WRITE_KEY)
    write_only.failed(2, "CLM_ADMIN_KEY")
    erased = await clm(stack, "customer", "erase", "gone", "--yes")
    assert erased.status == 0, erased.err
    assert (await clm(stack, "customer", "show", "gone")).status == 1
    again = await clm(stack, "customer", "erase", "gone", "--yes")
    again.failed(1, "unknown customer")


async def test_status_reports_health_lag_and_a_service_down(stack: Stack) -> None:
    await post(stack, event("signup", "s-1", datetime.now(UTC), plan="free"))
    await eventually(lambda: stage_of(stack, "s-1"), timeout=30, every=0.5)

    async def caught_up() -> Any:
        run = await clm(stack, "status", "--json")
        doc = run.json()
        groups = {row["group"] for row in doc["lag"]}
        done = stack.env["CLM_STAGE_ENGINE_GROUP"] in groups and all(
            row["lag"] == 0 for row in doc["lag"]
        )
        return (run, doc) if done else None

    run, doc = await eventually(caught_up, timeout=30, every=0.5)
    assert run.status == 0
    assert doc["healthy"] is True
    assert [s["state"] for s in doc["services"]] == ["ready", "ready", "ready"]
    engine_rows = [r for r in doc["lag"] if r["group"] == stack.env["CLM_STAGE_ENGINE_GROUP"]]
    assert len(engine_rows) == int(stack.env["CLM_TOPIC_EVENTS_PARTITIONS"])
    assert sum(r["end"] for r in engine_rows) == 1
    assert doc["dlq_records"] == 0
    assert doc["outbox"]["records"] == 0
    table = await clm(stack, "status")
    assert "total lag" in table.out
    assert "healthy" in table.out

    stack.processes["metrics"].stop()
    broken = await clm(stack, "status")
    assert broken.status == 1
    assert "down" in broken.out
    assert "NOT HEALTHY" in broken.out


async def test_status_compares_stage_counts_and_a_tampered_row_is_unhealthy(
    stack: Stack,
) -> None:
    await post(stack, event("signup", "s-1", datetime.now(UTC) - timedelta(minutes=5), plan="f"))
    await eventually(lambda: stage_of(stack, "s-1"), timeout=30, every=0.5)

    async def compared() -> Any:
        run = await clm(stack, "status", "--json")
        doc = run.json()
        return (run, doc) if "engine" in doc["stages"] else None

    run, doc = await eventually(compared, timeout=30, every=0.5)
    assert run.status == 0, run.out
    assert doc["healthy"] is True
    assert doc["stages"]["engine"] == doc["stages"]["metrics"]
    assert doc["stages"]["engine"]["acquisition"] == 1
    table = (await clm(stack, "status")).out
    assert "stage counts: engine and metrics agree" in table
    assert "segments: 0 active, 0 backfilling" in table
    assert doc["segments"] == {"active": 0, "backfilling": 0, "paused": False, "overdue": 0}

    # one customer too many in acquisition in the metrics' all-time flows; an old day's write
    # counter bumped so the service's cache of closed days reads the row again
    engine = create_engine(stack.env["CLM_DATABASE_URL"], pool_size=1)
    try:
        async with engine.begin() as conn:
            changed = await conn.execute(
                text(
                    "UPDATE kpi_rollups SET value = value + 1 WHERE ctid = ("
                    " SELECT ctid FROM kpi_rollups WHERE grain = 'all'"
                    " AND metric = 'flow::acquisition' LIMIT 1)"
                )
            )
            assert changed.rowcount == 1
            await conn.execute(
                text(
                    "INSERT INTO kpi_day_versions AS t (day, version)"
                    " VALUES (current_date - 3, 1)"
                    " ON CONFLICT (day) DO UPDATE SET version = t.version + 1"
                )
            )
    finally:
        await engine.dispose()
    broken = await clm(stack, "status")
    assert broken.status == 1, broken.out
    assert "NOT HEALTHY" in broken.out
    assert "stage counts differ: engine acquisition=1, metrics acquisition=2" in broken.out


async def test_dlq_list_show_and_replay_a_fixed_record(stack: Stack, tmp_path: Path) -> None:
    env = stack.env
    await produce(
        env["CLM_KAFKA_BOOTSTRAP"],
        env["CLM_TOPIC_EVENTS"],
        [(b"late", b"{not json"), (b"late", orjson.dumps({"type": "teleport"}))],
    )

    assert len(await read_topic(env["CLM_KAFKA_BOOTSTRAP"], env["CLM_TOPIC_DLQ"], expect=2)) == 2
    dead = (await clm(stack, "dlq", "list", "--json")).json()
    assert len(dead) == 2
    assert all(d["headers"]["reason"].startswith("undecodable") for d in dead)
    assert {d["headers"]["consumer_group"] for d in dead} == {env["CLM_STAGE_ENGINE_GROUP"]}
    ref = next(d["ref"] for d in dead if d["value"] == "{not json")

    table = await clm(stack, "dlq", "list")
    assert "2 record(s)" in table.out
    assert "undecodable" in table.out
    shown = await clm(stack, "dlq", "show", ref)
    assert shown.status == 0
    assert "{not json" in shown.out

    invalid = tmp_path / "invalid.json"
    invalid.write_bytes(
        orjson.dumps({**event("purchase", "late", datetime.now(UTC)), "source": "shop"})
    )
    refused = await clm(stack, "dlq", "replay", ref, "--fixed", str(invalid))
    refused.failed(2, "properties")  # names the field that is wrong

    fixed = tmp_path / "fixed.json"
    fixed.write_bytes(
        orjson.dumps({**event("signup", "late", datetime.now(UTC), plan="pro"), "source": "shop"})
    )
    replayed = await clm(stack, "dlq", "replay", ref, "--fixed", str(fixed))
    assert replayed.status == 0, replayed.err
    assert await eventually(lambda: stage_of(stack, "late"), timeout=30, every=0.5) == "acquisition"

    missing = await clm(stack, "dlq", "replay", "0:999")
    missing.failed(1, "no record 0:999")
    malformed = await clm(stack, "dlq", "show", "zero")
    malformed.failed(2, "PARTITION:OFFSET")

    # as they are (after a consumer fix): still poison, so both come back to the DLQ
    again = await clm(stack, "dlq", "replay", "--all")
    assert again.status == 0
    assert "re-submitted 2" in again.out
    assert len(await read_topic(env["CLM_KAFKA_BOOTSTRAP"], env["CLM_TOPIC_DLQ"], expect=4)) == 4
    everything = await clm(stack, "dlq", "list", "--json", "--limit", "0")
    assert len(everything.json()) == 4


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_migrate_builds_an_empty_database_and_reports_status(stack: Stack) -> None:
    admin_url = os.environ.get("CLM_TEST_PG_ADMIN_URL")
    if not admin_url:
        pytest.skip("needs CLM_TEST_PG_ADMIN_URL (make test sets it) to create a database")
    name = f"clm_migrate_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, pool_size=1)
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = stack.env["CLM_DATABASE_URL"].rsplit("/", 1)[0] + f"/{name}"
    try:
        behind = await clm(stack, "migrate", "--status", CLM_DATABASE_URL=url)
        assert behind.status == 1
        assert "(empty)" in behind.out
        done = await clm(stack, "migrate", CLM_DATABASE_URL=url)
        assert done.status == 0, done.err
        assert "(empty) ->" in done.out
        assert "topics: all present" in done.out
        current = await clm(stack, "migrate", "--status", CLM_DATABASE_URL=url)
        assert current.status == 0
        assert "up to date" in current.out
        elsewhere = await clm(stack, "migrate", "--config", "/nonexistent/alembic.ini")
        elsewhere.failed(2, "--config")
    finally:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
