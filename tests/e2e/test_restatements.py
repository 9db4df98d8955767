"""The whole stack under late events, identity merges, explicit merges and erasures: every KPI
of every window equals the brute-force truth of the surviving events, and the metrics
service's customers per stage equal the stage engine's.

The history is made to be hard: months of simulated journeys arrive shuffled (most customers'
events out of order) while the sweeper runs every second, so customers are moved at risk and
churned and then receive older events; anonymous visitors are identified later; two pairs of
known customers are merged and two customers erased, over HTTP, after everything arrived.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from clm_domain.kpis import window_bounds
from clm_simulator.customer_events import iso
from clm_simulator.personas import SimConfig, simulate
from clm_simulator.replay import replay, sweeps
from clm_simulator.survivors import (
    Anonymise,
    Erase,
    Merge,
    Operation,
    replay_surviving,
)
from clm_simulator.truth import truth
from tests.e2e.conftest import Stack, running_stack
from tests.e2e.kpi_checks import until_kpis_equal
from tests.e2e.test_clm_commands import clm
from tests.integration.conftest import eventually
from tests.keys import ADMIN, READ, WRITE

WINDOWS = {"24h": timedelta(hours=24), "30d": timedelta(days=30), "400d": timedelta(days=400)}


@pytest.fixture
def busy_sweeper_stack(prepared_env: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    """The three services, the stage engine sweeping every second (so backdated events
    arrive after the sweeper moved their customer: late events, restatements)."""
    env = {**prepared_env, "CLM_STAGE_ENGINE_SWEEP_S": "1"}
    with running_stack(env, tmp_path) as started:
        yield started


def history(now: datetime) -> tuple[list[Operation], list[dict[str, Any]]]:
    """Shuffled batches of journeys (with later identifications of anonymous visitors), then
    two explicit merges and two erasures; and every event document sent."""
    sim = simulate(SimConfig(seed=29, customers=40, as_of=now, source="shop", prefix="rs"))
    docs = list(sim.docs)
    known = sorted(c for c in sim.personas if "-c" in c)
    visitors = sorted(c for c in sim.personas if "-a" in c)
    rng = random.Random(29)
    for n, anon in enumerate(visitors[:3]):  # identified later: an implicit identity merge
        docs.append(
            {
                "type": "identify",
                "event_id": f"rs-identify-{n}",
                "occurred_at": iso(now - timedelta(days=2, hours=n)),
                "source": "shop",
                "customer_id": known[n],
                "anonymous_id": anon,
                "properties": {"traits": {"email": f"person{n}@example.com"}},
            }
        )
    rng.shuffle(docs)
    ops: list[Operation] = [docs[i : i + 25] for i in range(0, len(docs), 25)]
    ops += [
        Merge(into=known[3], source=known[4]),
        Merge(into=known[5], source=known[6]),
        Erase(customer_id=known[7]),
        Erase(customer_id=known[0]),  # one whose anonymous profile was merged into it
    ]
    return ops, docs


async def test_every_kpi_equals_the_truth_of_the_surviving_events(
    busy_sweeper_stack: Stack,
) -> None:
    stack = busy_sweeper_stack
    now = datetime.now(UTC)
    ops, docs = history(now)
    async with (
        httpx.AsyncClient(base_url=stack.ingest, headers=WRITE) as ingest,
        httpx.AsyncClient(base_url=stack.stage_engine, headers=READ) as engine,
        httpx.AsyncClient(base_url=stack.metrics, headers=READ) as metrics,
    ):
        for op in ops:
            if isinstance(op, Merge):
                answer = await engine.post(
                    f"/v1/customers/{op.into}/merge", json={"from": op.source}, headers=ADMIN
                )
                assert answer.status_code == 200, answer.text
            elif isinstance(op, Erase):
                answer = await engine.delete(f"/v1/customers/{op.customer_id}", headers=ADMIN)
                assert answer.status_code == 200, answer.text
            else:
                assert not isinstance(op, Anonymise)  # this test anonymises no one
                sent = await ingest.post("/v1/events/batch", json={"events": list(op)})
                assert sent.status_code in (200, 202, 207), sent.text
                assert not sent.json().get("rejected"), sent.text
            if op is ops[-5]:  # the last batch: merges and erasures act on what is applied
                await _caught_up(stack)

        as_of = datetime.now(UTC)
        steps = replay_surviving(ops, now=as_of)
        swept = sweeps(steps, as_of)
        naive = replay(docs, now=as_of)  # had nothing been taken back
        expected: dict[str, dict[str, Any]] = {}
        differs = False
        for name, span in WINDOWS.items():
            start, end = window_bounds(as_of, span)
            expected[name] = truth(steps, start, end, now=as_of, swept=swept)
            untouched = truth(naive, start, end, now=as_of, swept=sweeps(naive, as_of))
            differs = differs or untouched != expected[name]
        # the scenario is one where forgetting to take back would show
        assert differs

        for name, span in WINDOWS.items():
            start, end = window_bounds(as_of, span)
            query = {"from": _z(start), "to": _z(end)}
            await until_kpis_equal(
                metrics,
                query,
                expected[name],
                timeout=90,
                failure=f"{name}: KPIs differ from the truth",
            )

        # the one invariant: customers per stage now, as both services count them
        stages = (await engine.get("/v1/stages")).json()["stages"]
        now_kpis = (await metrics.get("/v1/kpis", params={"window": "1h"})).json()
        assert now_kpis["customers_by_stage"] == {k: int(v) for k, v in stages.items()}
        assert all(v >= 0 for v in now_kpis["customers_by_stage"].values())


async def _caught_up(stack: Stack) -> None:
    """Wait until every consumer group has applied everything (``clm status``: lag 0)."""

    async def done() -> bool | None:
        run = await clm(stack, "status", "--json")
        rows = run.json()["lag"]
        engine_group = stack.env["CLM_STAGE_ENGINE_GROUP"]
        ok = any(r["group"] == engine_group for r in rows) and all(r["lag"] == 0 for r in rows)
        return True if ok else None

    await eventually(done, timeout=120, every=1.0)


def _z(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
