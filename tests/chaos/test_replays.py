"""Duplicates, arrival order and a full replay: none of them changes what the stack holds.

- 10 % of the events posted twice, then the whole topic replayed from offset 0
  (``clm replay --yes``): customers, histories and KPIs are what they were;
- each customer's events posted in a shuffled order: the stages are the order-independent
  truth (the short profile: it runs in every ``make test``);
- customers erased, then the topic replayed: they do not come back.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from clm_infra.db import create_engine
from clm_infra.schema import customers, stage_transitions
from tests.chaos.harness import ChaosStack, Ledger, check, customer_of, journeys, send
from tests.conftest import REPO_ROOT
from tests.keys import ADMIN, READ


def clm_replay(env: Mapping[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "clm_cli", "replay", "--yes"],
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


async def snapshot(env: Mapping[str, str], metrics_url: str) -> dict[str, Any]:
    """Every customer row and history entry (without write times) and the all-time KPIs."""
    db = create_engine(env["CLM_DATABASE_URL"], pool_size=1)
    try:
        async with db.connect() as conn:
            rows = (await conn.execute(select(customers))).mappings().all()
            moves = (await conn.execute(select(stage_transitions))).mappings().all()
    finally:
        await db.dispose()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    async with httpx.AsyncClient(timeout=30) as http:
        kpis = await http.get(
            f"{metrics_url}/v1/kpis",
            params={
                "from": (now - timedelta(days=800)).isoformat(),
                "to": (now + timedelta(days=2)).isoformat(),
            },
            headers=READ,
        )
    body = kpis.json()
    return {
        "customers": sorted(
            tuple(sorted((k, str(v)) for k, v in r.items() if k != "updated_at")) for r in rows
        ),
        "history": sorted(
            tuple(str(m[k]) for k in ("customer_id", "from_stage", "to_stage", "at", "event_id"))
            for m in moves
        ),
        "kpis": {k: v for k, v in body.items() if k not in ("from", "to", "window")},
    }


@pytest.fixture
def slow_sweep_stack(shared_env: dict[str, str], tmp_path: Path) -> Iterator[ChaosStack]:
    """The stack with a sweep every 20 s: none while the journeys (months of backdated
    history, sent in seconds) arrive. A sweeper that moves a customer before its older events
    arrive makes them late, and the engine then records one correcting move at correction time
    instead of rewriting the published ones; a replay, which waits for the log end before it
    sweeps, writes the history as it should have been, so the two would differ by design."""
    started = ChaosStack({**shared_env, "CLM_STAGE_ENGINE_SWEEP_S": "20"}, tmp_path / "logs")
    try:
        yield started.start_all()
    finally:
        started.stop_all()


@pytest.mark.timeout(600)
async def test_reposts_and_a_replay_from_offset_zero_change_nothing(
    shared_env: dict[str, str], slow_sweep_stack: ChaosStack
) -> None:
    stack = slow_sweep_stack
    shared_env = stack.env
    rnd = random.Random(6)
    ledger = Ledger()
    docs = journeys(6, 80, "rp")
    again = rnd.sample(docs, len(docs) // 10)
    await send(stack.url("ingest"), docs, ledger)
    await send(stack.url("ingest"), again, ledger)  # the same event ids, later
    metrics = stack.url("metrics")
    await check(shared_env, ledger, metrics_url=metrics)
    before = await snapshot(shared_env, metrics)
    await asyncio.to_thread(clm_replay, shared_env)
    await check(shared_env, ledger, metrics_url=metrics)
    after = await snapshot(shared_env, metrics)
    assert before["customers"], "nothing to compare"
    for part in before:
        assert after[part] == before[part], part


def shuffled_per_customer(docs: list[dict[str, Any]], rnd: random.Random) -> list[dict[str, Any]]:
    """The same documents, each customer's in a random order (in the places its events held)."""
    places: dict[str, list[int]] = {}
    for i, doc in enumerate(docs):
        places.setdefault(customer_of(doc) or str(doc["event_id"]), []).append(i)
    out = list(docs)
    for where in places.values():
        mine = [docs[i] for i in where]
        rnd.shuffle(mine)
        for i, doc in zip(where, mine, strict=True):
            out[i] = doc
    return out


@pytest.mark.chaos_short
@pytest.mark.timeout(300)
async def test_each_customers_events_shuffled_end_in_the_order_free_truth(
    shared_env: dict[str, str], stack: ChaosStack
) -> None:
    docs = journeys(7, 50, "sh")
    mixed = shuffled_per_customer(docs, random.Random(7))
    assert mixed != docs
    ledger = Ledger()
    await send(stack.url("ingest"), mixed, ledger)
    await check(shared_env, ledger, metrics_url=stack.url("metrics"))


@pytest.mark.timeout(600)
async def test_erased_customers_do_not_come_back_after_a_replay(
    shared_env: dict[str, str], stack: ChaosStack
) -> None:
    ledger = Ledger()
    await send(stack.url("ingest"), journeys(10, 40, "er"), ledger)
    await check(shared_env, ledger, metrics_url=None)
    people = sorted({c for d in ledger.sent.values() if (c := customer_of(d))})
    erased = frozenset(random.Random(10).sample(people, 4))
    async with httpx.AsyncClient(base_url=stack.url("stage-engine"), timeout=30) as api:
        for cid in sorted(erased):
            gone = await api.delete(f"/v1/customers/{cid}", headers=ADMIN)
            assert gone.status_code in (200, 202, 204), gone.text
        await asyncio.to_thread(clm_replay, shared_env)
        await check(shared_env, ledger, metrics_url=None, erased=erased)
        for cid in sorted(erased):
            answer = await api.get(f"/v1/customers/{cid}", headers=READ)
            assert answer.status_code == 404, answer.text
