"""``clm customer events`` and ``clm customer export`` against a served stage engine (its
consumer on the real broker, the real Postgres)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clm_infra.settings import CommonSettings
from clm_stage_engine.app import create_app
from clm_stage_engine.settings import StageEngineSettings
from tests.factories import event_doc
from tests.integration.conftest import NO_REQUEST_LIMITS, eventually, send_events
from tests.integration.ingest_server import serving
from tests.integration.test_clm_cli import clm
from tests.keys import ADMIN_KEY, READ, READ_TOKEN


@pytest.fixture
def engine_url(common: CommonSettings, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    settings = StageEngineSettings(**NO_REQUEST_LIMITS, stage_engine_idle_recheck_s=0.5)
    with serving(create_app(settings)) as url:
        monkeypatch.setenv("CLM_STAGE_ENGINE_URL", url)
        monkeypatch.setenv("CLM_READ_TOKEN", READ_TOKEN)
        monkeypatch.setenv("CLM_ADMIN_KEY", ADMIN_KEY)
        yield url


async def test_events_and_export_of_a_customer(
    engine_url: str,
    common: CommonSettings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await send_events(
        common,
        *(
            event_doc("purchase", customer_id="cli-1", event_id=f"p{n}", order_id=f"o-{n}")
            for n in range(3)
        ),
    )

    async def applied() -> bool:
        async with httpx.AsyncClient(base_url=engine_url) as http:
            response = await http.get("/v1/customers/cli-1", headers=READ)
        return response.status_code == 200 and response.json()["events"] == 3

    await eventually(applied)

    status, out, err = await clm(["customer", "events", "cli-1", "--limit", "2"], capsys)
    assert status == 0, err
    assert "p0" in out
    assert "p1" in out
    assert "next page: clm customer events cli-1 --after " in out
    after = out.rsplit("--after ", 1)[1].strip()
    status, out, _ = await clm(["customer", "events", "cli-1", "--after", after, "--json"], capsys)
    assert status == 0
    assert [e["event_id"] for e in json.loads(out)["events"]] == ["p2"]

    target = tmp_path / "cli-1.json"
    status, out, err = await clm(["customer", "export", "cli-1", "--output", str(target)], capsys)
    assert status == 0, err
    assert str(target) in out
    exported = json.loads(target.read_text())
    assert exported["customer_id"] == "cli-1"
    assert [e["event_id"] for e in exported["events"]] == ["p0", "p1", "p2"]
    assert sorted(os.listdir(tmp_path)) == ["cli-1.json"]  # no .part left

    status, _, err = await clm(["customer", "export", "nobody", "-o", str(tmp_path / "x")], capsys)
    assert status == 1
    assert "unknown customer 'nobody'" in err
    assert sorted(os.listdir(tmp_path)) == ["cli-1.json"]
    status, _, err = await clm(["customer", "export", "cli-1", "--token", READ_TOKEN], capsys)
    assert status == 2
    assert "refused the admin key" in err
