"""Postgres crashes and Postgres slows down while events flow; the consumers are never
restarted. They must ride it out by themselves: retry with backoff, say not-ready meanwhile,
commit nothing while Postgres is away, stay in their consumer group while it is slow, keep
their memory bounded, and catch up afterwards — every acknowledged event applied once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from clm_devstack.postgres import start_postgres, stop_postgres
from clm_infra.db import create_engine
from tests.chaos.conftest import OwnPostgres
from tests.chaos.harness import (
    BOUND_S,
    ChaosStack,
    Ledger,
    check,
    kafka_committed,
    lag,
    loaded,
    ready,
    rss_mib,
    sample_value,
    scrape,
)
from tests.chaos.latency_proxy import LatencyProxy
from tests.integration.conftest import eventually
from tests.keys import READ

CONSUMERS = ("stage-engine", "metrics")
DOWN_S = 8.0  # Postgres away for longer than a batch retry backoff, several times over
RSS_LIMIT_MIB = 300.0  # the bound for each service


def consumer_pids(stack: ChaosStack) -> dict[str, list[int]]:
    return {name: [p.pid for p in stack.alive(name)] for name in CONSUMERS}


async def batches(stack: ChaosStack, outcome: str) -> float:
    """Batches of both consumers that ended so: ``failed`` (rolled back and retried) or
    ``fenced`` (the stored offset was not what the consumer last saw)."""
    total = 0.0
    for name in CONSUMERS:
        total += sample_value(
            await scrape(stack.url(name)), "clm_consumer_batches_total", outcome=outcome
        )
    return total


async def kpis_status(metrics_url: str) -> int:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(f"{metrics_url}/v1/kpis", headers=READ)
    return answer.status_code


@pytest.mark.timeout(600)
async def test_postgres_restarted_immediately_mid_batch(
    own_postgres: OwnPostgres, tmp_path: Path
) -> None:
    cfg = own_postgres.cfg
    # keys cached for 1 s only: the ingest meets the outage too, and must answer 2xx (a key
    # it saw recently) or 503, never 500
    env = {**own_postgres.env, "CLM_AUTH_CACHE_S": "1"}
    stack = ChaosStack(env, tmp_path / "logs").start_all()
    pids = consumer_pids(stack)
    ledger = Ledger()
    async with loaded(stack, ledger) as load:
        await load.grows(by=150)
        # a crash (pg_ctl stop -m immediate) and a start at once: transactions in flight die
        await asyncio.to_thread(stop_postgres, cfg, immediate=True)
        await asyncio.to_thread(start_postgres, cfg)
        await load.grows(by=150)

        # a crash and DOWN_S seconds without Postgres while the ingest keeps acknowledging
        await asyncio.to_thread(stop_postgres, cfg, immediate=True)
        down_at = time.monotonic()
        # the Kafka hint of a batch committed just before the crash (hints go at most once a
        # second: BatchPolicy.hint_interval_s)
        await asyncio.sleep(2.0)
        committed_before = await kafka_committed(env)
        acked_before = len(ledger.acked)
        await asyncio.sleep(DOWN_S / 2)
        readiness = {name: await ready(stack.url(name)) for name in CONSUMERS}
        kpis_while_down = await kpis_status(stack.url("metrics"))
        await asyncio.sleep(max(0.0, DOWN_S - (time.monotonic() - down_at)))
        committed_after = await kafka_committed(env)
        acked_while_down = len(ledger.acked) - acked_before
        await asyncio.to_thread(start_postgres, cfg)

        await load.grows(by=200)  # flowing again
        await load.finish()
        assert readiness == dict.fromkeys(CONSUMERS, False), (
            f"/readyz while Postgres was down: {readiness}"
        )
        assert kpis_while_down == 503, f"the KPI API answered {kpis_while_down} without Postgres"
        assert not ledger.misbehaving(BOUND_S), ledger.misbehaving(BOUND_S)[:10]
        assert committed_after == committed_before, "a consumer committed while Postgres was down"
        assert acked_while_down > 0, "nothing was acknowledged while Postgres was down"
        assert await batches(stack, "failed") > 0, "no batch met the dead Postgres"
        for name in CONSUMERS:

            async def back(name: str = name) -> bool:
                return await ready(stack.url(name))

            await eventually(back, timeout=30, every=0.5)
        assert consumer_pids(stack) == pids, "a consumer process died or was replaced"
        assert stack.started == 3
        # fenced: a commit the crash took back (asynchronous commit), so the offset the
        # consumer saw committed was not the stored one; it re-read it and went on
        print(
            f"chaos: {acked_while_down} events acknowledged while Postgres was down, "
            f"{await batches(stack, 'failed'):.0f} batches rolled back and retried, "
            f"{await batches(stack, 'fenced'):.0f} fenced"
        )
        await check(env, ledger, metrics_url=stack.url("metrics"))


@contextlib.asynccontextmanager
async def sampling_rss(stack: ChaosStack, peaks: dict[str, float]) -> AsyncIterator[None]:
    """Record each consumer process's peak RSS (MiB) into ``peaks`` while the block runs."""

    async def sample() -> None:
        while True:
            for name in CONSUMERS:
                for proc in stack.alive(name):
                    peaks[name] = max(peaks.get(name, 0.0), rss_mib(proc.pid))
            await asyncio.sleep(0.5)

    task = asyncio.create_task(sample())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.timeout(600)
async def test_slow_postgres_grows_lag_without_ejection_then_catches_up(
    shared_env: dict[str, str], tmp_path: Path
) -> None:
    direct = make_url(shared_env["CLM_DATABASE_URL"])
    proxy = await LatencyProxy(direct.host or "127.0.0.1", direct.port or 5432).start()
    via_proxy = direct.set(host="127.0.0.1", port=proxy.port)
    env = {**shared_env, "CLM_DATABASE_URL": via_proxy.render_as_string(hide_password=False)}
    stack = ChaosStack(env, tmp_path / "logs").start_all()
    pids = consumer_pids(stack)
    db = create_engine(shared_env["CLM_DATABASE_URL"], pool_size=1)  # the test's: never slow
    ledger = Ledger()
    peaks: dict[str, float] = {}
    topic = shared_env["CLM_TOPIC_EVENTS"]
    try:
        # half the usual rate: the backlog a slow spell builds is drained quicker afterwards
        async with loaded(stack, ledger, rate=40.0) as load, sampling_rss(stack, peaks):
            await load.grows(by=150)
            assigned = {name: stack.assignments(name) for name in CONSUMERS}
            assert all(assigned.values()), f"no assignment logged yet: {assigned}"
            worst = 0
            for slow_s, fast_s in ((15.0, 4.0), (8.0, 0.0)):  # slow, fast, slow again
                proxy.slow = True
                until = time.monotonic() + slow_s
                while time.monotonic() < until:
                    await asyncio.sleep(1.0)
                    worst = max(worst, (await lag(shared_env, db))[topic])
                proxy.slow = False
                await asyncio.sleep(fast_s)
            await load.grows(by=100)  # flowing at full speed again
            await load.finish()

            async def drained() -> bool:
                return not any((await lag(shared_env, db)).values())

            began = time.monotonic()
            await eventually(drained, timeout=120, every=0.5)
            print(f"chaos: the backlog drained in {time.monotonic() - began:.1f}s")
            # a member ejected (or leaving) rebalances the group: every member is handed its
            # partitions again and says so in its log
            assert {name: stack.assignments(name) for name in CONSUMERS} == assigned, (
                "the group rebalanced (a consumer was ejected) while Postgres was slow"
            )
            assert consumer_pids(stack) == pids, "a consumer process died or was replaced"
            exposed = await scrape(stack.url("stage-engine"))
            batch_s = sample_value(exposed, "clm_consumer_batch_duration_seconds_sum")
            batches = sample_value(exposed, "clm_consumer_batch_duration_seconds_count")
            print(
                f"chaos: {batches:.0f} stage-engine batches, {batch_s / batches:.2f}s each on "
                f"average; its lag peaked at {worst} records while Postgres was slow "
                f"({proxy.delayed_chunks} chunks delayed); peak RSS "
                + ", ".join(f"{n} {mib:.0f} MiB" for n, mib in sorted(peaks.items()))
            )
            assert worst >= 100, f"the lag never grew while Postgres was slow (peak {worst})"
            for name, mib in peaks.items():
                assert mib < RSS_LIMIT_MIB, f"{name} held {mib:.0f} MiB while Postgres was slow"
            await check(shared_env, ledger, metrics_url=stack.url("metrics"))
    finally:
        await db.dispose()
        await proxy.close()
