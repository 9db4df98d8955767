"""``clm simulate`` against the real services: every customer's stage read back from the stage
engine equals the truth file, the KPIs of the truth's windows equal the metrics service's; the
refusals (ingest down, bad key) are one line; the devstack demo stream starts, posts, stops."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from clm_devstack import demo
from tests.e2e.conftest import Stack, free_port, running_stack
from tests.integration.conftest import eventually
from tests.keys import READ, WRITE_KEY

#: A KPI of each stage that the demo must light up within a minute (24 h window).
DEMO_KPIS = (
    "site_visits",
    "ad_clicks",
    "leads",
    "new_customers",
    "purchases",
    "repeat_purchases",
    "reactivations",
    "churned",
    "support_tickets_opened",
    "nps_responses",
    "reviews",
)


@pytest.fixture
def sweeping_stack(prepared_env: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    """The three services, the stage engine sweeping every 15 s (not every minute).

    The simulator sends months of backdated history in seconds; a sweeper running meanwhile
    would move customers before their older events arrive, which restatements then correct
    (``test_restatements.py`` runs that on purpose, with a sweep every second). Here the
    truth's sweeper runs after the events, and so does this one.
    """
    env = {**prepared_env, "CLM_STAGE_ENGINE_SWEEP_S": "15"}
    with running_stack(env, tmp_path) as started:
        yield started


def clm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clm_cli", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


async def test_every_customer_ends_in_the_truths_stage(
    sweeping_stack: Stack, tmp_path: Path
) -> None:
    stack = sweeping_stack
    truth_path = tmp_path / "truth.json"
    done = await asyncio.to_thread(
        clm,
        "simulate",
        "--customers=60",
        "--seed=42",
        f"--url={stack.ingest}",
        f"--key={WRITE_KEY}",
        "--batch=25",
        "--source=shop",  # the write key's (the truth's first-touch sources)
        f"--truth={truth_path}",
        "--windows=24h,30d",
        env=stack.env,
    )
    assert done.returncode == 0, done.stderr
    assert "0 refused" in done.stderr
    truth = orjson.loads(truth_path.read_bytes())
    assert truth["schema"] == "clm.simulate.truth.v1"
    assert all(truth["stage_counts"].values()), truth["stage_counts"]
    await stages_match(stack, truth)

    async with httpx.AsyncClient(base_url=stack.metrics, headers=READ) as metrics:
        for name, window in truth["kpis"].items():

            async def counted(window: dict[str, Any] = window) -> dict[str, Any] | None:
                body: dict[str, Any] = (await metrics.get(window["query"])).json()
                same = body["customers_by_stage"] == window["kpis"]["customers_by_stage"]
                return body if same and body["events"] == window["kpis"]["events"] else None

            body = await eventually(counted, timeout=60, every=0.5)
            got = {k: v for k, v in body.items() if k not in ("window", "from", "to")}
            assert got == window["kpis"], (name, diff(got, window["kpis"]))


async def stages_match(stack: Stack, truth: dict[str, Any]) -> None:
    """Every customer's stage, read from the stage engine, becomes the truth's (or fail)."""
    want = {cid: c["stage"] for cid, c in truth["customers"].items()}
    async with httpx.AsyncClient(base_url=stack.stage_engine, headers=READ) as api:

        async def stages() -> dict[str, str | None]:
            out: dict[str, str | None] = {}
            for cid in want:
                answer = await api.get(f"/v1/customers/{cid}")
                out[cid] = answer.json()["stage"] if answer.status_code == 200 else None
            return out

        async def matching() -> dict[str, str | None] | None:
            got = await stages()
            return got if got == want else None

        try:
            await eventually(matching, timeout=120, every=1.0)
        except AssertionError:
            got = await stages()
            wrong = {c: (got[c], want[c], truth["customers"][c]) for c in want if got[c] != want[c]}
            raise AssertionError(f"stages differ from the truth: {wrong}") from None


async def test_a_csv_replay_shifted_or_live_ends_in_the_truths_stages(
    sweeping_stack: Stack, tmp_path: Path
) -> None:
    common = [f"--url={sweeping_stack.ingest}", f"--key={WRITE_KEY}", "--source=shop"]
    for mode, prefix, span in (
        ("--shift-to-now", "shifted", timedelta(days=730)),  # inactivity: at risk, churned
        ("--compress=86400", "live", timedelta(days=3)),
    ):
        csv_path = orders_csv(tmp_path / f"{prefix}.csv", prefix, span)
        truth_path = tmp_path / f"{prefix}.json"
        began = time.monotonic()
        done = await asyncio.to_thread(
            clm,
            "simulate",
            f"--csv={csv_path}",
            mode,
            f"--prefix={prefix}",
            f"--truth={truth_path}",
            *common,
            env=sweeping_stack.env,
        )
        assert done.returncode == 0, done.stderr
        if prefix == "live":  # three days replayed 86 400 times faster: about 3 seconds
            assert time.monotonic() - began >= 2.5
        truth = orjson.loads(truth_path.read_bytes())
        assert truth["events"] == 120
        if prefix == "shifted":
            assert truth["stage_counts"]["at_risk"]
            assert truth["stage_counts"]["churned"]
        await stages_match(sweeping_stack, truth)


def orders_csv(path: Path, customers: str, span: timedelta) -> Path:
    """120 orders of 30 customers over ``span`` from 2024-01-01."""
    rng = random.Random(5)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    rows = ["Customer,Date,Amount,Currency"]
    for _ in range(120):
        at = start + timedelta(minutes=rng.randint(0, int(span.total_seconds() // 60)))
        amount = rng.randint(100, 9000) / 100
        rows.append(f"{customers}-{rng.randint(1, 30)},{at:%Y-%m-%d %H:%M},{amount},")
    path.write_text("\n".join(rows) + "\n")
    return path


def diff(got: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    return {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)}


def test_an_ingest_that_is_down_is_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = clm("simulate", "--customers=3", f"--url={url}", "--key=k")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"clm: error: cannot reach the ingest at {url} — ")


async def test_a_bad_key_says_so(stack: Stack) -> None:
    done = await asyncio.to_thread(
        clm, "simulate", "--customers=3", f"--url={stack.ingest}", "--key=not-a-key"
    )
    assert done.returncode == 2
    assert done.stderr.startswith("clm: error: the ingest at "), done.stderr
    assert "refused the write key (401" in done.stderr
    assert "--key or CLM_WRITE_KEY" in done.stderr


async def test_the_demo_stream_starts_posts_and_stops(stack: Stack, tmp_path: Path) -> None:
    host, port = stack.ingest.removeprefix("http://").split(":")
    env = {
        **stack.env,
        "CLM_INGEST_HOST": host,
        "CLM_INGEST_PORT": port,
        "CLM_DEV_WRITE_KEY": WRITE_KEY,
        "CLM_DEMO_RATE": "200",
    }
    pid, reused = demo.start(tmp_path, env)
    try:
        assert not reused
        assert demo.start(tmp_path, env) == (pid, True)

        async def every_stage_lit() -> dict[str, Any] | None:
            async with httpx.AsyncClient(base_url=stack.metrics, headers=READ) as api:
                body: dict[str, Any] = (await api.get("/v1/kpis?window=24h")).json()
            lit = all(body["customers_by_stage"].values()) and all(body[k] for k in DEMO_KPIS)
            return body if lit else None

        await eventually(every_stage_lit, timeout=60, every=1.0)
    finally:
        assert demo.stop(tmp_path)
    assert demo.running_pid(tmp_path) is None
    assert "simulate:" in demo.log_path(tmp_path).read_text()
