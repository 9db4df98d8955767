"""Backfilling a segment: when a definition is created or its condition changes, every
existing customer is evaluated under the new version, a page a transaction, in the background
(the live path goes on: a page skips the rows a writer holds, and that writer evaluates them
itself under the same version, since every writer reads the catalog after a change commits).

A replay pauses memberships (:func:`clm_infra.replay.pause_segments`) and queues a backfill of
every segment; once the replay is done the pause ends here and those backfills run.

Entries and exits of a backfill are recorded in the spans (``backfill``) but announced (on
``clm.segments.v1`` and to webhooks) only when the definition asks (``announce_backfill``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clm_infra.replay import replay_behind
from clm_stage_engine.repository import outbox, segment_backfill, segment_live, webhooks
from clm_stage_engine.usecases.segments import Evaluation, Segmenting, evaluate

log = logging.getLogger(__name__)

BACKFILLED = Counter("clm_segment_backfill_customers_total", "Customers a backfill evaluated")


async def backfill_step(
    conn: AsyncConnection, segmenting: Segmenting, now: datetime, chunk: int
) -> bool:
    """One page of the oldest pending backfill; False when none is pending (or memberships
    are paused: a replay runs)."""
    segments = await segmenting.segments(conn)  # the catalog's lock first, as every writer
    job = await segment_backfill.lock_pending(conn)
    if job is None or segmenting.cache.paused:
        return False
    segment = next((s for s in segments if s.id == job.segment_id), None)
    if segment is None or segment.version != job.version:  # cannot be while the row is locked
        log.warning("backfill of a segment not in the catalog", extra={"segment": job.segment_id})
        return False
    total = job.total if job.total is not None else await segment_backfill.count_customers(conn)
    rows = await segment_backfill.page(conn, job.after, chunk)
    finished = len(rows) < chunk
    subscriptions = await webhooks.active_subscriptions(conn) if job.announce else []
    how = Evaluation(
        (segment,), now, segmenting.scores, subscriptions, announce=job.announce, clocked=segments
    )
    states = {s.customer_id: s for s in rows}
    # at the end, members without a customer row leave (a replay did not rebuild them)
    gone = await segment_live.orphans(conn, segment.id) if finished else []
    changed = await evaluate(
        conn,
        how,
        states,
        dict.fromkeys(states, "backfill"),
        gone=dict.fromkeys(gone, "backfill"),
    )
    await outbox.insert_outbox(conn, segmenting.topic, changed.records)
    await webhooks.enqueue_deliveries(conn, changed.deliveries)
    BACKFILLED.inc(len(rows))
    await segment_backfill.save_progress(
        conn,
        job,
        after=rows[-1].customer_id if rows else job.after,
        done=job.done + len(rows),
        total=max(total, job.done + len(rows)),
        now=now,
        finished=finished,
    )
    return True


async def resume_after_replay(engine: AsyncEngine, segmenting: Segmenting, group_id: str) -> bool:
    """Whether memberships may be kept now: not paused, or paused by a replay that is done
    (then the pause ends, and the backfills it queued may run)."""
    async with engine.begin() as conn:
        _, paused = await segmenting.cache.definitions(conn)
        if paused and await replay_behind(conn, group_id):
            return False
    if paused:
        async with engine.begin() as conn:
            await segment_live.resume(conn)
        log.info("segment memberships resumed after the replay; backfilling every segment")
    return True


async def backfill_forever(
    engine: AsyncEngine,
    segmenting: Callable[[], Awaitable[Segmenting]],
    clock: Callable[[], datetime],
    *,
    group_id: str,
    chunk: int,
    poll_s: float,
    stopping: asyncio.Event,
) -> None:
    """Work through pending backfills, a page a transaction; look again every ``poll_s``.
    While a replay of ``group_id`` runs, wait for it (memberships are paused)."""
    while not stopping.is_set():
        try:
            if await resume_after_replay(engine, await segmenting(), group_id):
                while not stopping.is_set():
                    async with engine.begin() as conn:
                        if not await backfill_step(conn, await segmenting(), clock(), chunk):
                            break
        except Exception:
            log.warning("segment backfill failed; retrying", exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=poll_s)
