"""The sweeper: time-based moves (inactivity → ``at_risk`` → ``churned``, and P(alive) below
``at_risk.p_alive_below`` → ``at_risk`` with the rule on) from a given clock, and the segments
of the customers whose segment clock is due (a ``days_since`` threshold crossed).

Safe with several replicas: each pass takes the candidates with ``FOR UPDATE SKIP LOCKED``, so
two sweepers never move the same customer, and a consumer batch holding a customer's row is
simply skipped this pass. Moves are computed by the same pure :func:`lifecycle.advance` the
reducer uses, recorded in the history and sent downstream like any other move.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain.p_alive import AliveModel
from clm_domain.rules import LifecycleRules
from clm_infra.replay import replay_behind
from clm_stage_engine.model_cache import ModelCache
from clm_stage_engine.usecases.segments import Segmenting
from clm_stage_engine.usecases.sweep import sweep_batch, sweep_predicted, sweep_segments

log = logging.getLogger(__name__)


async def sweep_once(
    engine: AsyncEngine,
    rules: LifecycleRules,
    now: datetime,
    *,
    lifecycle_topic: str,
    batch: int = 1000,
    model: AliveModel | None = None,
    segmenting: Segmenting | None = None,
) -> int:
    """Move every customer whose inactivity crossed a threshold by ``now``, and with
    ``at_risk.p_alive_below`` set and a ``model``, every one whose P(alive) fell below it;
    with ``segmenting``, evaluate the segments of those moved and of those whose segment
    clock is due. Returns moves."""
    at_risk_before = now - timedelta(days=rules.at_risk.inactive_days)
    churn_before = now - timedelta(days=rules.churned.inactive_days)
    total = 0
    while True:
        async with engine.begin() as conn:
            seen, moved = await sweep_batch(
                conn,
                rules,
                now,
                (at_risk_before, churn_before),
                lifecycle_topic,
                batch,
                model,
                segmenting,
            )
            total += moved
            if seen < batch:
                break
    if model is not None and rules.at_risk.p_alive_below is not None:
        total += await _sweep_predicted(
            engine, rules, model, now, lifecycle_topic, batch, segmenting
        )
    if segmenting is not None:
        await _sweep_segments(engine, segmenting, now, batch)
    return total


async def _sweep_segments(
    engine: AsyncEngine, segmenting: Segmenting, now: datetime, batch: int
) -> int:
    """The segment clocks due by ``now``, a page a transaction, earliest first (each page
    sets the clocks it evaluated past ``now``); returns the customers evaluated."""
    total = 0
    while True:
        async with engine.begin() as conn:
            seen, evaluated = await sweep_segments(conn, segmenting, now, batch)
        total += evaluated
        if seen < batch or not evaluated:
            return total


async def _sweep_predicted(
    engine: AsyncEngine,
    rules: LifecycleRules,
    model: AliveModel,
    now: datetime,
    topic: str,
    batch: int,
    segmenting: Segmenting | None,
) -> int:
    """The P(alive) pass: one walk over the customer stages by id, a page a transaction
    (keyset, so a candidate that does not move is never looked at twice in a pass)."""
    total, after = 0, ""
    while True:
        async with engine.begin() as conn:
            seen, moved, after = await sweep_predicted(
                conn, rules, model, now, topic, after=after, limit=batch, segmenting=segmenting
            )
            total += moved
        if seen < batch:
            return total


async def sweep_forever(
    engine: AsyncEngine,
    rules: LifecycleRules,
    clock: Callable[[], datetime],
    *,
    lifecycle_topic: str,
    group_id: str,
    every_s: float,
    batch: int,
    stopping: asyncio.Event,
    models: ModelCache | None = None,
    segmenting: Callable[[], Awaitable[Segmenting | None]] | None = None,
) -> None:
    """Sweep every ``every_s`` seconds; not while a replay of ``group_id`` is under way (a
    customer rebuilt from part of its events would look inactive and be moved for nothing).
    ``models``: the current model version, for the P(alive) rule (None: never on);
    ``segmenting``: what keeps segment memberships, asked each round (the scores move with
    the model version)."""
    while not stopping.is_set():
        try:
            async with engine.begin() as conn:
                behind = await replay_behind(conn, group_id)
            if behind:
                log.info("sweeper waits for the replay", extra={"behind": behind})
            else:
                model = None if models is None else await models.for_rules(rules)
                segments = None if segmenting is None else await segmenting()
                moved = await sweep_once(
                    engine,
                    rules,
                    clock(),
                    lifecycle_topic=lifecycle_topic,
                    batch=batch,
                    model=model,
                    segmenting=segments,
                )
                if moved:
                    log.info("sweeper moved customers", extra={"moved": moved})
        except Exception:
            log.warning("sweep failed; retrying next round", exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=every_s)
