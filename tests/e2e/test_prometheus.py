"""A real Prometheus server (Debian's ``prometheus``, started here on loopback) scrapes the three
real services: a PromQL query returns the KPI the journey set implies, every service's
exposition passes ``promtool check metrics``, the rule files load, and every metric the Grafana
dashboards query is exposed by a live service.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from clm_simulator.journeys import generate
from tests.e2e.conftest import Stack, free_port
from tests.integration.conftest import eventually
from tests.keys import WRITE
from tests.kpi_truth import replay, truth
from tests.promql_names import RULES, panel_exprs, service_metric_names

_TYPE = re.compile(r"^# TYPE (\S+) (\w+)$", re.M)
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)[{ ]", re.M)


def exposed_names(text: str) -> set[str]:
    """Every metric name a /metrics text declares or samples (histogram series included)."""
    names = set(_SAMPLE.findall(text))
    for name, kind in _TYPE.findall(text):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


@pytest.fixture
def prometheus(stack: Stack, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(
            "prometheus not installed (Debian package `prometheus`; `make test` installs it as root)"
        )
    jobs = {
        "clm-ingest": stack.ingest,
        "clm-stage-engine": stack.stage_engine,
        "clm-metrics": stack.metrics,
    }
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in sorted(RULES.glob("*.yml"))],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [url.split("://", 1)[1]]}]}
            for job, url in jobs.items()
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def test_prometheus_scrapes_the_services_and_promql_returns_the_kpi(
    stack: Stack, prometheus: str
) -> None:
    now = datetime.now(UTC)
    docs = generate(7, customers=25, now=now - timedelta(minutes=2), days=20)
    for doc in docs:
        doc["source"] = "shop"  # the e2e write key's source
    async with httpx.AsyncClient(timeout=10) as http:
        for doc in docs:
            posted = await http.post(f"{stack.ingest}/v1/events", json=doc, headers=WRITE)
            assert posted.status_code == 202, posted.text
        refused = await http.post(f"{stack.ingest}/v1/events", json={"type": "nope"}, headers=WRITE)
        assert refused.status_code == 422

        steps = replay(docs, now=now)
        end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        want = truth(steps, end - timedelta(days=31), end, now=now)
        assert want["purchases"] > 0

        async def query(promql: str) -> list[dict[str, Any]]:
            r = await http.get(f"{prometheus}/api/v1/query", params={"query": promql})
            body = r.json()
            assert body["status"] == "success", body
            result: list[dict[str, Any]] = body["data"]["result"]
            return result

        async def purchases() -> float | None:
            try:
                result = await query('clm_kpi_purchases{job="clm-metrics", window="30d"}')
            except httpx.TransportError:
                return None
            value = float(result[0]["value"][1]) if result else None
            return value if value == want["purchases"] else None

        assert await eventually(purchases, timeout=90, every=0.5) == want["purchases"]
        revenue = await query('clm_kpi_revenue{window="30d"}')
        assert Decimal(revenue[0]["value"][1]).quantize(Decimal("0.01")) == Decimal(want["revenue"])
        customers = await query('sum(clm_kpi_customers{job="clm-metrics"})')
        assert float(customers[0]["value"][1]) == sum(want["customers_by_stage"].values())

        async def all_up() -> list[float] | None:
            up = sorted(float(r["value"][1]) for r in await query('up{job=~"clm-.*"}'))
            return up if up == [1.0, 1.0, 1.0] else None

        assert await eventually(all_up, timeout=30, every=0.5) == [1.0, 1.0, 1.0]
        rules = (await http.get(f"{prometheus}/api/v1/rules")).json()["data"]["groups"]
        assert {g["name"] for g in rules} >= {"clm-recording", "clm-pipeline", "clm-kpis"}
        assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules

        exposed: set[str] = set()
        promtool = shutil.which("promtool")
        for service in (stack.ingest, stack.stage_engine, stack.metrics):
            text = (await http.get(f"{service}/metrics")).text
            exposed |= exposed_names(text)
            if promtool is not None:
                checked = await asyncio.to_thread(
                    subprocess.run,
                    [promtool, "check", "metrics"],
                    input=text,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert checked.returncode == 0, f"{service}: {checked.stdout}{checked.stderr}"
    missing = {
        (dashboard, title, name)
        for dashboard, title, expr in panel_exprs()
        for name in service_metric_names(expr)
        if name not in exposed
    }
    assert not missing, sorted(missing)
