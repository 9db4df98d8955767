"""The metrics handler's CPU per lifecycle record, on this checkout: for comparing two commits
back to back on one machine (run it in each checkout, alternating, a few times).

``python -m bench.handler_cpu [SEEDS]`` (with ``CLM_TEST_PG_ADMIN_URL`` or
``CLM_DATABASE_URL`` set): journeys of 250 customers per seed over 60 days from the seeded
generator, turned into the stage engine's lifecycle records, fed to a fresh
``LifecycleHandler`` in batches of 200 (one transaction each) on a new migrated database; prints
the Python process's CPU time (not Postgres') and the wall time per record.

``python -m bench.handler_cpu --against CHECKOUT [--rounds N] [SEEDS]``: the same
measurement, this file's code run in turn in this checkout and in ``CHECKOUT`` (another
worktree with its own ``.venv``: ``uv sync --frozen --all-packages`` there), each run a fresh
process, N rounds alternating which goes first (A B, B A, …) so the machine's drift falls on
both alike; the median CPU per record of each, their ratio and every run go to the
``metrics-cpu`` section of RESULTS.md, with the CPU gauge before and after. The records come
from each checkout's own generator, reducer and record code (the counts are shown: equal
counts mean the same journeys).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bench.databases import ROOT, create_migrated_database, drop_database
from bench.results import cpu_gauge_ms, write_section
from clm_infra.db import create_engine
from clm_metrics.handler import LifecycleHandler
from clm_simulator.journeys import generate
from tests.kpi_truth import record, replay
from tests.records import Record

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
BATCH = 200
TARGET = 1.15  # issue 29: CPU per event at most 15 % over the sketch version


async def measure(seeds: int) -> tuple[int, float, float]:
    """Records, CPU µs and wall µs per record."""
    values = [
        orjson.dumps(record(step))
        for seed in range(seeds)
        for step in replay(generate(seed, customers=250, now=NOW, days=60), now=NOW)
    ]
    url = await create_migrated_database("bench_handler_cpu")
    engine = create_engine(url, pool_size=1)
    try:
        handler = LifecycleHandler()
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(0, len(values), BATCH):
            async with engine.begin() as conn:
                await handler(conn, [Record(None, v) for v in values[i : i + BATCH]])
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await engine.dispose()
        await drop_database(url)
    return len(values), cpu / len(values) * 1e6, wall / len(values) * 1e6


@dataclass(frozen=True)
class Sample:
    checkout: str
    records: int
    cpu_us: float
    wall_us: float


def _commit(checkout: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(checkout), *args], capture_output=True, text=True, check=False
        ).stdout.strip()

    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "-uno") else ""
    return f"{git('rev-parse', '--short', 'HEAD')} {git('log', '-1', '--format=%s')}{dirty}"


def run_in(checkout: Path, seeds: int) -> Sample:
    """This file's measurement in a fresh process of ``checkout``'s interpreter and code."""
    done = subprocess.run(
        [str(checkout / ".venv" / "bin" / "python"), "-c", Path(__file__).read_text(), str(seeds)],
        cwd=checkout,
        env=os.environ,
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(
        r"records=(\d+) cpu_us_per_record=([\d.]+) wall_us_per_record=([\d.]+)", done.stdout
    )
    if found is None:
        raise RuntimeError(f"no figures from {checkout}: {done.stdout} {done.stderr}")
    sample = Sample(str(checkout), int(found[1]), float(found[2]), float(found[3]))
    print(f"{checkout}: {done.stdout.strip()}", flush=True)
    return sample


def compare(other: Path, rounds: int, seeds: int) -> str:
    """Alternating runs here and in ``other``; the section's text."""
    here = ROOT
    gauges = [cpu_gauge_ms()]
    order: list[Sample] = []
    for n in range(rounds):
        pair = (other, here) if n % 2 == 0 else (here, other)
        order += [run_in(pair[0], seeds), run_in(pair[1], seeds)]
    gauges.append(cpu_gauge_ms())
    mine = [s for s in order if s.checkout == str(here)]
    base = [s for s in order if s.checkout == str(other)]
    cpu_here = statistics.median(s.cpu_us for s in mine)
    cpu_base = statistics.median(s.cpu_us for s in base)
    ratio = cpu_here / cpu_base
    # each round's own ratio: how far the noise moves it
    pairs = [mine[i].cpu_us / base[i].cpu_us for i in range(rounds)]
    lines = [
        "## metrics: handler CPU per record against the sketch version",
        "",
        f"`python -m bench.handler_cpu --against {other} --rounds {rounds} {seeds}`: journeys "
        f"of 250 customers a seed ({seeds} seeds) over 60 days from the seeded generator, "
        "replayed by the stage reducer into the stage engine's lifecycle records, fed to a "
        f"fresh `LifecycleHandler` in batches of {BATCH} records (one transaction each) on a "
        "new migrated database; the CPU time of the Python process only (not Postgres') while "
        "it handles them, divided by the records. Each run is a fresh process; the two "
        "checkouts take turns, the first of each round alternating. A record here is a replayed "
        "event: the batches spread over 60 days, so they touch many more buckets (and "
        "bitmaps) than live traffic, whose batches fall in the current minute — a worst case, "
        "not the service's CPU an event under live load (the e2e section has that).",
        "",
        "| checkout | commit | records | median CPU µs / record | each run's CPU µs / record "
        "| median wall µs / record |",
        "|---|---|---:|---:|---|---:|",
    ]
    for label, path, runs in (("exact (this)", here, mine), ("sketch (baseline)", other, base)):
        lines.append(
            f"| {label} | {_commit(path)} | {runs[0].records:,} "
            f"| {statistics.median(s.cpu_us for s in runs):.1f} "
            f"| {' / '.join(f'{s.cpu_us:.0f}' for s in runs)} "
            f"| {statistics.median(s.wall_us for s in runs):.1f} |"
        )
    met = "met" if ratio <= TARGET else "not met"
    lines += [
        "",
        f"CPU ratio exact / sketch: **{ratio:.3f}** (target ≤ {TARGET}: **{met}**); each "
        f"round's own ratio {' / '.join(f'{r:.3f}' for r in pairs)}. CPU gauge "
        f"{gauges[0]:.0f} ms before the runs and {gauges[1]:.0f} ms after (lower is faster).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.handler_cpu")
    parser.add_argument("seeds", nargs="?", type=int, default=20)
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.against is None:
        n, cpu, wall = asyncio.run(measure(args.seeds))
        print(f"records={n} cpu_us_per_record={cpu:.1f} wall_us_per_record={wall:.1f}")
        return
    write_section("metrics-cpu", compare(args.against.resolve(), args.rounds, args.seeds))


if __name__ == "__main__":
    main()
