"""``clm segments`` against a served stage engine on the real Postgres."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_infra.consent_schema import customer_consent
from clm_infra.segment_schema import segment_memberships, segments
from clm_infra.settings import CommonSettings
from clm_stage_engine.app import create_app
from clm_stage_engine.settings import StageEngineSettings
from tests.integration.conftest import NO_REQUEST_LIMITS, eventually
from tests.integration.ingest_server import serving
from tests.integration.test_clm_cli import clm
from tests.keys import ADMIN_KEY, READ_TOKEN

T0 = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.fixture
def engine_url(common: CommonSettings, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with serving(create_app(StageEngineSettings(**NO_REQUEST_LIMITS))) as url:
        monkeypatch.setenv("CLM_STAGE_ENGINE_URL", url)
        monkeypatch.setenv("CLM_READ_TOKEN", READ_TOKEN)
        monkeypatch.setenv("CLM_ADMIN_KEY", ADMIN_KEY)
        yield url


async def test_define_look_and_delete(
    engine_url: str, db: AsyncEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    definition = tmp_path / "buyers.json"
    condition = {"fact": "purchases", "op": "ge", "value": 1}
    definition.write_text(json.dumps({"name": "buyers", "condition": condition}))
    status, out, err = await clm(
        ["segments", "create", "--file", str(definition), "--announce-backfill", "--json"], capsys
    )
    assert status == 0, err
    created = json.loads(out)
    sid = created["id"]
    assert created["announce_backfill"] is True

    status, out, _ = await clm(["segments", "list"], capsys)
    assert status == 0
    assert "buyers" in out
    assert "pending 0/?" in out

    async def backfilled() -> bool | None:  # else it closes the spans of no customer below
        async with db.connect() as conn:
            done = await conn.execute(
                select(segments.c.backfill_finished_at).where(segments.c.id == sid)
            )
            return done.scalar_one() is not None or None

    assert await eventually(backfilled)
    async with db.begin() as conn:
        await conn.execute(
            insert(segment_memberships).values(
                [
                    {
                        "segment_id": sid,
                        "customer_id": f"c-{i}",
                        "version": 1,
                        "entered_at": T0,
                        "entered_by": "backfill",
                    }
                    for i in range(3)
                ]
            )
        )
    status, out, _ = await clm(["segments", "members", str(sid), "--limit", "2"], capsys)
    assert status == 0
    assert "c-0" in out
    assert "c-1" in out
    assert "c-2" not in out
    assert f"clm segments members {sid} --after c-1" in out
    status, out, _ = await clm(
        ["segments", "members", str(sid), "--after", "c-1", "--json"], capsys
    )
    assert [m["customer_id"] for m in json.loads(out)["members"]] == ["c-2"]
    async with db.begin() as conn:  # c-1 withdrew marketing consent
        await conn.execute(
            insert(customer_consent).values(
                customer_id="c-1",
                purpose="marketing",
                granted=False,
                at=T0,
                source="shop",
                event_id="c1-consent",
            )
        )
    status, out, _ = await clm(["segments", "members", str(sid), "--purpose", "marketing"], capsys)
    assert (status, "c-0" in out, "c-1" in out, "c-2" in out) == (0, True, False, True)
    assert "left out: 1 (marketing consent withdrawn)" in out

    window = ["--from", "2026-11-01T00:00:00Z", "--to", "2026-11-03T00:00:00Z"]
    status, out, _ = await clm(["segments", "history", str(sid), *window, "--json"], capsys)
    doc = json.loads(out)
    assert (doc["entries"], doc["size_at_to"], len(doc["buckets"])) == (3, 3, 2)
    status, out, _ = await clm(["segments", "history", str(sid), *window], capsys)
    assert "3 entries, 0 exits" in out

    definition.write_text(json.dumps({"condition": {"fact": "purchases", "op": "ge", "value": 2}}))
    status, out, _ = await clm(["segments", "update", str(sid), "--file", str(definition)], capsys)
    assert "version 2" in out
    status, out, _ = await clm(["segments", "show", str(sid)], capsys)
    assert status == 0
    assert '"value": 2' in out
    assert "size" in out

    assert (await clm(["segments", "delete", str(sid)], capsys))[0] == 0
    status, _, err = await clm(["segments", "show", str(sid)], capsys)
    assert (status, f"unknown segment {sid}" in err) == (1, True)


async def test_refusals_say_what_is_wrong(
    engine_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "condition": {"all": [{"fact": "nope"}]}}))
    status, _, err = await clm(["segments", "create", "--file", str(bad)], capsys)
    assert status == 1
    assert "condition.all[0].fact" in err
    bad.write_text("[1]")
    status, _, err = await clm(["segments", "create", "--file", str(bad)], capsys)
    assert (status, "must hold a JSON object" in err) == (2, True)
    bad.write_text(json.dumps({"name": "x", "colour": "red"}))
    status, _, err = await clm(["segments", "create", "--file", str(bad)], capsys)
    assert (status, "unknown fields colour" in err) == (2, True)
    missing = tmp_path / "missing.json"
    status, _, err = await clm(["segments", "create", "--file", str(missing)], capsys)
    assert (status, "cannot read it" in err) == (2, True)
    status, _, err = await clm(["segments", "delete", "12345"], capsys)
    assert (status, "unknown segment 12345" in err) == (1, True)
    bad.write_text(
        json.dumps({"name": "x", "condition": {"fact": "events", "op": "ge", "value": 1}})
    )
    status, _, err = await clm(["segments", "create", "--file", str(bad), "--token", "x"], capsys)
    assert (status, "refused the admin key" in err) == (2, True)


async def test_webhook_subscriptions_with_their_purpose(
    engine_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    hook = "http://127.0.0.1:9/hook"
    status, out, _ = await clm(["webhooks", "subscribe", hook, "--stages", "purchase"], capsys)
    assert (status, "subscription 1 (marketing)" in out) == (0, True)
    assert out.strip().splitlines()[-1].startswith("whsec_")
    status, out, _ = await clm(
        ["webhooks", "subscribe", hook, "--purpose", "service", "--json"], capsys
    )
    assert (status, json.loads(out)["purpose"]) == (0, "service")
    status, out, _ = await clm(["webhooks", "subscriptions"], capsys)
    rows = [line.split() for line in out.strip().splitlines()[2:]]
    assert [(r[0], r[1], r[3]) for r in rows] == [
        ("1", "marketing", "conversion"),
        ("2", "service", "all"),
    ]
    assert (await clm(["webhooks", "unsubscribe", "1"], capsys))[0] == 0
    status, out, _ = await clm(["webhooks", "subscriptions", "--json"], capsys)
    assert [s["id"] for s in json.loads(out)["subscriptions"]] == [2]
    status, _, err = await clm(["webhooks", "unsubscribe", "1"], capsys)
    assert (status, "no active subscription 1" in err) == (1, True)
    status, _, err = await clm(["webhooks", "subscribe", hook, "--stages", "nope"], capsys)
    assert (status, "stages" in err) == (1, True)
