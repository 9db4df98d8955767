"""Where the stage engine's ``segments`` phase goes, part by part:
``python -m bench.segment_phase [--segments 10] [--events 20000]``.

The segments bench's journeys are folded by the pure reducer in batches of 2000 events (as a
lane folds them), and each batch's segments phase is replayed on a fresh database, its parts
timed as :func:`clm_stage_engine.usecases.segments.evaluate` runs them: the read of the open
spans and clocks, the walk (memberships and entries / exits), the clocks' due times, the
write of the spans and of the clocks that moved, the records, the outbox row. One
connection and no Kafka: what each part costs, not the engine's rate. The garbage collector
is tuned as the engine's (its pauses otherwise land in whichever part allocates). Needs ``CLM_TEST_PG_ADMIN_URL`` (or ``CLM_DATABASE_URL``).

``--revisits R``: the journeys are applied untimed, then R more visits of every customer
(an hour apart, right after its journey) are timed instead: events of known customers whose
memberships mostly stay, the steady state's common case (the spans' and clocks' tables
analyzed first, as autovacuum would have by then).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from bench.databases import create_migrated_database, drop_database, plain_url
from bench.segment_defs import define_segments, segment_conditions
from bench.stage_engine import _journey_events
from clm_domain.customer_state import CustomerState
from clm_domain.events import Event, parse_event
from clm_domain.reducer import apply_event
from clm_domain.rules import load_rules
from clm_domain.segments.membership import Segment
from clm_infra.db import create_engine
from clm_stage_engine.repository import outbox, segment_live
from clm_stage_engine.repository.segment_live import Span
from clm_stage_engine.segment_cache import SegmentCache
from clm_stage_engine.usecases import segments as live

BATCH = 2000
PARTS = ("open spans (SQL)", "walk (py)", "clocks (py)", "write (SQL)", "records (py)", "outbox")


class Timer:
    """Seconds booked to named parts, lap by lap."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._last = time.perf_counter()

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        self.seconds[part] += now - self._last
        self._last = now


def _walked(
    segments: Sequence[Segment],
    written: dict[str, CustomerState],
    spans: dict[str, dict[int, datetime]],
    causes: dict[str, str],
    now: datetime,
    timer: Timer,
) -> tuple[list[tuple[Span, int]], list[Span], list[tuple[str, datetime | None]]]:
    """``evaluate``'s loop, its walk and its clocks timed apart."""
    by_id = {s.id: s for s in segments}
    entered: list[tuple[Span, int]] = []
    left: list[Span] = []
    clocks: list[tuple[str, datetime | None]] = []
    for cid, state in written.items():
        steps, due = live.walk(segments, state, now, now, None)
        held = {sid: at for sid, at in spans.get(cid, {}).items() if sid in by_id}
        for step in steps:
            live._step(cid, step, held, causes[cid], entered, left, by_id)
        timer.lap("walk (py)")
        clocks.append((cid, due))
        timer.lap("clocks (py)")
    return entered, left, clocks


def _revisits(journeys: Sequence[Event], rounds: int) -> list[Event]:
    """``rounds`` visits of each customer of ``journeys``, an hour apart after its last event."""
    last: dict[str, datetime] = {}
    for event in journeys:
        last[str(event.customer_id)] = event.occurred_at
    return [
        parse_event(
            {
                "event_id": f"r{cid}-{r}",
                "type": "site_visit",
                "customer_id": cid,
                "occurred_at": (at + timedelta(hours=r + 1)).isoformat(),
                "source": "bench",
                "properties": {"url": "https://shop.example/"},
            }
        )
        for r in range(rounds)
        for cid, at in last.items()
    ]


async def profile(
    segments: int, events: int, revisits: int = 0
) -> tuple[dict[str, float], int, int]:
    """Seconds per part, the entries and exits recorded, and the events timed."""
    db_url = await create_migrated_database("clm_bench_phase")
    try:
        conn = await asyncpg.connect(plain_url(db_url))
        await define_segments(conn, segment_conditions(segments))
        await conn.close()
        engine = create_engine(db_url, pool_size=1)
        rules, cache, timer = load_rules(), SegmentCache(), Timer()
        journeys = [parse_event(orjson.loads(v)) for _, v in _journey_events(events)]
        timed_from = len(journeys) if revisits else 0
        journeys += _revisits(journeys, revisits)
        states: dict[str, CustomerState] = {}
        changes = 0
        for at in range(0, len(journeys), BATCH):
            if at == timed_from and revisits:  # what came before was the set-up
                async with engine.begin() as c:  # its statistics, as autovacuum's by now
                    await c.exec_driver_sql("ANALYZE segment_memberships, segment_clock")
                timer.seconds.clear()
                changes = 0
            written: dict[str, CustomerState] = {}
            causes: dict[str, str] = {}
            for event in journeys[at : at + BATCH]:
                cid = str(event.customer_id)
                written[cid] = states[cid] = apply_event(states.get(cid), event, rules).state
                causes[cid] = f"event:{event.source}:{event.event_id}"
            now = datetime.now(UTC)
            async with engine.begin() as c:
                found = await cache.current(c)
                timer.lap("setup")
                held = await segment_live.open_spans(c, written)
                timer.lap("open spans (SQL)")
                entered, left, due = _walked(found, written, held.spans, causes, now, timer)
                clocks = [(cid, at) for cid, at in due if held.clocks.get(cid) != at]
                await segment_live.write_spans(c, entered=entered, left=left, clocks=clocks)
                timer.lap("write (SQL)")
                by_id = {s.id: s for s in found}
                changed = live._announced(live.Evaluation(found, now), entered, left, by_id)
                timer.lap("records (py)")
                await outbox.insert_outbox(c, "bench.segments", changed.records)
                timer.lap("outbox")
                changes += len(changed.records)
            timer.lap("setup")
        await engine.dispose()
    finally:
        await drop_database(db_url)
    return {p: timer.seconds[p] for p in PARTS}, changes, len(journeys) - timed_from


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--revisits", type=int, default=0)
    args = parser.parse_args()
    gc.freeze()  # the collector tuned as the stage engine's process tunes it
    gc.set_threshold(200_000, 20, 20)
    seconds, changes, timed = asyncio.run(profile(args.segments, args.events, args.revisits))
    total = sum(seconds.values())
    what = f"{timed:,} revisits" if args.revisits else f"{timed:,} journey events"
    print(f"{args.segments} segments, {what}, {changes / timed:.2f} entries + exits an event")
    for part, s in seconds.items():
        print(f"  {part:18s} {s / timed * 1e6:7.1f} µs/event  {s / total:6.1%}")
    print(f"  {'segments phase':18s} {total / timed * 1e6:7.1f} µs/event")


if __name__ == "__main__":
    main()
