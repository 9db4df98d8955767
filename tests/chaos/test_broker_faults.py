"""The broker killed and paused under a loaded ingest: every request answered 2xx or 503
within 10 s, then recovery, and every acknowledged event applied exactly once downstream."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import pytest

from clm_devstack.kafka import running_pid, start_kafka
from tests.chaos.conftest import OwnBroker
from tests.chaos.harness import BOUND_S, ChaosStack, Ledger, check, loaded, rss_mib


@pytest.mark.timeout(900)
async def test_broker_sigkilled_three_times_during_ingest(
    own_broker: OwnBroker, tmp_path: Path
) -> None:
    cfg, env = own_broker.cfg, own_broker.env
    stack = ChaosStack(env, tmp_path / "logs").start_all()
    ledger = Ledger()
    rnd = random.Random(7)
    async with loaded(stack, ledger) as load:
        for _ in range(3):
            await load.grows(by=100)
            await asyncio.sleep(rnd.uniform(0.0, 1.5))
            pid = running_pid(cfg)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(rnd.uniform(2.0, 6.0))  # requests meet a dead broker
            await asyncio.to_thread(start_kafka, cfg)  # same data, same ports
        await load.grows(by=200)  # recovered
        await load.finish()
        assert not ledger.misbehaving(BOUND_S), ledger.misbehaving(BOUND_S)[:10]
        assert any(r.status == 503 for r in ledger.requests), "no request met the dead broker"
        await check(env, ledger, metrics_url=stack.url("metrics"))


@pytest.mark.timeout(900)
async def test_broker_paused_30s_then_resumed(own_broker: OwnBroker, tmp_path: Path) -> None:
    cfg, env = own_broker.cfg, own_broker.env
    stack = ChaosStack(env, tmp_path / "logs").start_all()
    ledger = Ledger()
    async with loaded(stack, ledger) as load:
        await load.grows(by=150)
        pid = running_pid(cfg)
        assert pid is not None
        ingest_pid = stack.alive("ingest")[0].pid
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(30)
            paused_rss = rss_mib(ingest_pid)
        finally:
            os.kill(pid, signal.SIGCONT)
        await load.grows(by=200)  # recovered
        await load.finish()
        assert not ledger.misbehaving(BOUND_S), ledger.misbehaving(BOUND_S)[:10]
        assert any(r.status == 503 for r in ledger.requests), "no request met the paused broker"
        assert paused_rss < 300, f"the ingest held {paused_rss:.0f} MiB while the broker was away"
        await check(env, ledger, metrics_url=stack.url("metrics"))
