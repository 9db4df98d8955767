"""A rule change, then ``clm replay --yes --with-metrics``: the stage engine rebuilds every
customer under the new rules and the metrics service, emptied and started again at the
lifecycle stream's end, counts exactly what the replay publishes — its customers per stage and
every KPI equal the truth under the new rules, not the old counts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from clm_devstack.services import start_service
from clm_domain.kpis import window_bounds
from clm_domain.rules import LifecycleRules, load_rules
from clm_simulator.personas import SimConfig, simulate
from clm_simulator.replay import replay, sweeps
from clm_simulator.truth import truth
from tests.e2e.conftest import free_port, running_stack
from tests.e2e.kpi_checks import until_kpis_equal
from tests.integration.conftest import eventually
from tests.keys import READ, WRITE

ROOT = Path(__file__).resolve().parents[2]


def clm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clm_cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_a_replay_with_metrics_recounts_under_the_new_rules(
    prepared_env: dict[str, str], tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    sim = simulate(SimConfig(seed=7, customers=30, as_of=now, source="shop", prefix="rp"))
    # the new rules: loyal after two purchases (not three)
    looser = tmp_path / "lifecycle.yaml"
    text = (ROOT / "deploy/config/lifecycle.yaml").read_text()
    looser.write_text(text.replace("  purchases: 3 ", "  purchases: 2 ", 1))
    new_rules = load_rules(looser)
    (tmp_path / "before").mkdir()
    (tmp_path / "after").mkdir()
    assert new_rules.loyalty.purchases == 2
    # the sweeper moves the simulated inactive customers within a second, not a minute
    quick = {**prepared_env, "CLM_STAGE_ENGINE_SWEEP_S": "1"}
    with running_stack(quick, tmp_path / "before") as stack:
        async with httpx.AsyncClient(base_url=stack.ingest, headers=WRITE) as ingest:
            for n in range(0, len(sim.docs), 50):
                sent = await ingest.post("/v1/events/batch", json={"events": sim.docs[n : n + 50]})
                assert sent.status_code in (200, 202, 207), sent.text
        env = {
            **stack.env,
            "CLM_METRICS_URL": stack.metrics,
            "CLM_STAGE_ENGINE_URL": stack.stage_engine,
        }
        old = replay(sim.docs, now=now)
        async with httpx.AsyncClient(base_url=stack.metrics, headers=READ) as metrics:

            async def counted_old() -> Any:
                body = (await metrics.get("/v1/kpis", params={"window": "1h"})).json()
                want = _stages(old, now)
                return body if body["customers_by_stage"] == want else None

            await eventually(counted_old, timeout=90, every=1.0)

        # refused while the metrics service runs
        refused = await asyncio.to_thread(clm, env, "replay", "--yes", "--with-metrics")
        assert refused.returncode == 2, refused.stderr
        assert "stop every metrics replica first" in refused.stderr

        stack.processes["metrics"].stop()
        stack.processes["stage-engine"].stop()
        # replayed while no engine runs: the one started next begins at offset 0 at once
        done = await asyncio.to_thread(clm, env, "replay", "--yes", "--with-metrics")
        assert done.returncode == 0, done.stderr
        assert "metrics emptied" in done.stdout
        env["CLM_STAGE_ENGINE_RULES_PATH"] = str(looser)
        engine = start_service("stage-engine", env, tmp_path / "after", free_port())
        try:
            metrics_proc = start_service("metrics", env, tmp_path / "after", free_port())
            try:
                await _equal_the_new_truth(
                    engine.base_url, metrics_proc.base_url, sim.docs, new_rules
                )
            finally:
                metrics_proc.stop()
        finally:
            engine.stop()


async def _equal_the_new_truth(
    engine_url: str, metrics_url: str, docs: list[Any], rules: LifecycleRules
) -> None:
    as_of = datetime.now(UTC)
    steps = replay(docs, now=as_of, rules=rules)
    swept = sweeps(steps, as_of, rules)
    start, end = window_bounds(as_of, timedelta(days=400))
    want = truth(steps, start, end, now=as_of, swept=swept)
    old = truth(replay(docs, now=as_of), start, end, now=as_of, swept=swept)
    assert want["customers_by_stage"] != old["customers_by_stage"]  # the rules matter here
    query = {
        "from": start.isoformat().replace("+00:00", "Z"),
        "to": end.isoformat().replace("+00:00", "Z"),
    }
    async with (
        httpx.AsyncClient(base_url=metrics_url, headers=READ) as metrics,
        httpx.AsyncClient(base_url=engine_url, headers=READ) as engine,
    ):
        await until_kpis_equal(
            metrics, query, want, timeout=120, failure="KPIs differ from the new rules' truth"
        )
        stages = (await engine.get("/v1/stages")).json()["stages"]
        assert {k: int(v) for k, v in stages.items()} == want["customers_by_stage"]


def _stages(steps: list[Any], now: datetime) -> dict[str, int]:
    start, end = window_bounds(now, timedelta(hours=1))
    counts: dict[str, int] = truth(steps, start, end, now=now, swept=sweeps(steps, now))[
        "customers_by_stage"
    ]
    return counts
