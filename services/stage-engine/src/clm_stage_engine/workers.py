"""The stage engine's background work, run in the ``all`` role: the consumer lanes, the
outbox relay, the sweeper, the webhook dispatcher, the models' refit and the segments'
backfill, each under a :class:`Supervisor`.

The lanes are consumer loops side by side, each a member of the group with partitions of its
own, sharing the rows this process wrote (a customer moves between lanes only with its
partition, and every row's version is checked when written back). They share one stop: a lane
at its poison limit stops its siblings too (its partitions would otherwise move to them and
pour the rest into the DLQ).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from clm_infra.consumer import BatchPolicy, PoisonLimitExceeded, run_batch_consumer
from clm_infra.kafka import make_producer
from clm_infra.worker import Supervisor, Workers
from clm_stage_engine.deps import State
from clm_stage_engine.handler import EventsHandler
from clm_stage_engine.known import KnownStates
from clm_stage_engine.predictions import Horizon
from clm_stage_engine.relay import OutboxGate, OutboxRelay, PayloadCache
from clm_stage_engine.sweeper import sweep_forever
from clm_stage_engine.usecases.backfill import backfill_forever
from clm_stage_engine.usecases.refit import refit_forever
from clm_stage_engine.webhooks import Dispatcher

#: The lanes' connections plan every statement for its arguments and the tables' current
#: sizes, never from a cached generic plan (``docs/performance.md``, *The stage engine*).
FRESH_PLANS = ("SET plan_cache_mode = force_custom_plan",)


def build_workers(state: State) -> Workers:
    """The process's workers: all of them in the ``all`` role, none in ``api`` (an API
    replica; the workers run in the ``all`` processes)."""
    workers = Workers(supervisors=[])
    if state.settings.stage_engine_role != "all":
        return workers
    written = PayloadCache()  # the outbox rows the lanes committed, for the relay
    lanes = _Lanes(state, workers, written)
    workers.supervisors = [
        *(
            Supervisor(
                f"stage-engine consumer {lane}", lanes.attempt(lane), fatal=(PoisonLimitExceeded,)
            )
            for lane in range(state.settings.stage_engine_lanes)
        ),
        Supervisor("outbox relay", functools.partial(_relay, state, workers, written)),
        Supervisor("sweeper", functools.partial(_sweep, state, workers)),
        Supervisor("webhook dispatcher", functools.partial(_dispatch, state, workers)),
        Supervisor("model refit", functools.partial(_refit, state, workers)),
        Supervisor("segment backfill", functools.partial(_backfill, state, workers)),
    ]
    return workers


class _Lanes:
    """The consumer lanes' shared handler, batch policy and stop."""

    def __init__(self, state: State, workers: Workers, written: PayloadCache) -> None:
        settings = state.settings
        self.state = state
        self.workers = workers
        self.handler = EventsHandler(
            settings.topics.lifecycle,
            state.rules,
            KnownStates(settings.stage_engine_known_states),
            written,
            state.pseudonyms,
            state.models,
            settings.topics.segments,
            Horizon(settings.model.horizon_months, settings.model.monthly_discount),
        )
        self.policy = BatchPolicy(
            max_records=settings.batch.records,
            max_wait_s=settings.batch.wait_s,
            fill_s=settings.batch.fill_s,
            idle_recheck_s=settings.stage_engine_idle_recheck_s,
            session=FRESH_PLANS,
            gate=OutboxGate(state.engine, settings.stage_engine_outbox_max_backlog),
            stall_s=settings.stage_engine_stall_s,
        )
        self.stop = asyncio.Event()

    def attempt(self, lane: int) -> Callable[[], Awaitable[None]]:
        return functools.partial(self._consume, lane)

    def _sibling_stopped(self, lane: int) -> None:
        if self.stop.is_set() and not self.workers.stopping.is_set():
            raise PoisonLimitExceeded(f"lane {lane}: a sibling lane hit the poison limit")

    async def _consume(self, lane: int) -> None:
        settings = self.state.settings
        self._sibling_stopped(lane)
        await run_batch_consumer(
            settings,
            self.state.engine,
            name=f"clm-stage-engine-{lane}",  # the client id sorts the group's members
            topic=settings.topics.events,
            group_id=settings.stage_engine_group,
            handler=self.handler,
            policy=self.policy,
            register=functools.partial(self.workers.register, f"consumer {lane}"),
            stopping=self.workers.stopping,
            lanes_stop=self.stop,
        )
        self._sibling_stopped(lane)


async def _relay(state: State, workers: Workers, written: PayloadCache) -> None:
    settings = state.settings
    producer = make_producer(settings, client_id="clm-stage-engine-relay")
    try:
        await producer.start()
        relay = OutboxRelay(
            state.engine,
            producer,
            poll_s=settings.stage_engine_outbox_poll_s,
            cache=written,
        )
        workers.register("relay", relay)
        if workers.stopping.is_set():
            return
        await relay.run()
    finally:
        workers.register("relay", None)
        with contextlib.suppress(Exception):
            await producer.stop()


async def _sweep(state: State, workers: Workers) -> None:
    settings = state.settings
    await sweep_forever(
        state.engine,
        state.rules,
        lambda: datetime.now(UTC),
        lifecycle_topic=settings.topics.lifecycle,
        group_id=settings.stage_engine_group,
        every_s=settings.stage_engine_sweep_s,
        batch=settings.stage_engine_sweep_batch,
        stopping=workers.stopping,
        models=state.models,
        segmenting=state.segmenting,
    )


async def _refit(state: State, workers: Workers) -> None:
    settings = state.settings.model
    await refit_forever(
        state.engine,
        lambda: datetime.now(UTC),
        every_s=settings.refit_interval_s,
        min_repeat_customers=settings.min_repeat_customers,
        fitted=state.models.fitted,
        stopping=workers.stopping,
    )


async def _backfill(state: State, workers: Workers) -> None:
    await backfill_forever(
        state.engine,
        state.segmenting,
        lambda: datetime.now(UTC),
        group_id=state.settings.stage_engine_group,
        chunk=state.settings.segments.backfill_chunk,
        poll_s=state.settings.segments.backfill_poll_s,
        stopping=workers.stopping,
    )


async def _dispatch(state: State, workers: Workers) -> None:
    settings = state.settings
    dispatcher = Dispatcher(
        state.engine,
        timeout_s=settings.webhooks.timeout_s,
        max_attempts=settings.webhooks.max_attempts,
        poll_s=settings.webhooks.poll_s,
        concurrency=settings.webhooks.concurrency,
        url_policy=state.url_policy,
        secrets_box=state.secrets_box,
    )
    workers.register("dispatcher", dispatcher)
    try:
        if not workers.stopping.is_set():
            await dispatcher.run()
    finally:
        workers.register("dispatcher", None)
