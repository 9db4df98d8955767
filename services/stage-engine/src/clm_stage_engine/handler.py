"""One micro-batch of ``clm.events.v1``, applied inside the consumer's transaction: the Kafka
side of :mod:`clm_stage_engine.usecases.batch`.

Records are decoded (what cannot be comes back as poison, for the DLQ), repeats of an event id
within the batch dropped, and the rest applied; once the transaction commits, the rows written
are remembered (:mod:`~clm_stage_engine.known`) and the outbox row handed to the relay's cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_domain.events import Event, parse_event_json
from clm_domain.pseudonyms import DEV_PSEUDONYM_KEY, Pseudonyms
from clm_domain.rules import LifecycleRules
from clm_infra.consumer import BatchResult, Poison
from clm_stage_engine.known import KnownStates
from clm_stage_engine.model_cache import ModelCache
from clm_stage_engine.predictions import Horizon, score_source
from clm_stage_engine.processor import first_of_each
from clm_stage_engine.relay import PayloadCache
from clm_stage_engine.usecases.batch import DUPLICATES, BatchApplier, Outcome, Phases

#: Predicted CLV's horizon where the caller names none (12 months, undiscounted).
DEFAULT_HORIZON = Horizon()


def decode(record: Any) -> Event:
    if record.value is None:
        raise ValueError("empty record value")
    return parse_event_json(record.value)


class EventsHandler:
    """Decode, dedupe, resolve, fold and write one batch; poison comes back for the DLQ."""

    def __init__(
        self,
        lifecycle_topic: str,
        rules: LifecycleRules,
        known: KnownStates | None = None,
        outbox: PayloadCache | None = None,
        pseudonyms: Pseudonyms | None = None,
        models: ModelCache | None = None,
        segments_topic: str | None = None,
        horizon: Horizon = DEFAULT_HORIZON,
    ) -> None:
        self.lifecycle_topic = lifecycle_topic
        self.horizon = horizon  # predicted CLV's, as segments on it read it
        # the model version the P(alive) rule reads (the sweeper's too); None: rule never on
        self.models = models
        # how an erased customer is remembered: never its id, only its keyed hash (the app
        # passes CLM_PSEUDONYM_KEY's; tests that drive the handler directly get the dev key)
        self.pseudonyms = pseudonyms if pseudonyms is not None else Pseudonyms(DEV_PSEUDONYM_KEY)
        self.rules = rules
        # rows this process wrote, filled only through BatchResult.committed (a caller that
        # does not call it, as the tests that drive the handler directly, reads every row)
        self.known = known if known is not None else KnownStates(0)
        self.outbox = outbox if outbox is not None else PayloadCache(0)  # the relay's
        self.applier = BatchApplier(
            lifecycle_topic, rules, self.known, self.pseudonyms, segments_topic
        )

    async def __call__(self, conn: AsyncConnection, records: Sequence[Any]) -> BatchResult:
        wanted: set[str] = set()
        try:
            return await self._apply(conn, records, wanted)
        except BaseException:
            self.known.forget(wanted)  # what it took from memory may be what went stale
            raise

    async def _apply(
        self, conn: AsyncConnection, records: Sequence[Any], wanted: set[str]
    ) -> BatchResult:
        now = datetime.now(UTC)
        phases = Phases()
        decoded, poison = _decode_all(records)
        unique = first_of_each(decoded)
        DUPLICATES.inc(len(decoded) - len(unique))
        phases.lap("decode")
        fresh = [(record, event, record.value) for record, event in unique]
        model = None if self.models is None else await self.models.for_rules(self.rules)
        version = None if self.models is None else await self.models.current()
        outcome = await self.applier.apply(
            conn,
            fresh,
            now=now,
            wanted=wanted,
            phases=phases,
            model=model,
            scores=score_source(version, self.horizon),
        )
        poison.extend(Poison(record, reason) for record, reason in outcome.result.failed)
        return BatchResult(
            poison=poison,
            applied=len(outcome.result.applied) + outcome.consents,
            committed=lambda: self._committed(outcome),
        )

    def _committed(self, outcome: Outcome) -> None:
        self.known.remember(outcome.result.states, outcome.xid)
        if outcome.queued is not None:
            self.outbox.put(*outcome.queued)


def _decode_all(records: Sequence[Any]) -> tuple[list[tuple[Any, Event]], list[Poison]]:
    decoded: list[tuple[Any, Event]] = []
    poison: list[Poison] = []
    for record in records:
        try:
            decoded.append((record, decode(record)))
        except (ValidationError, ValueError) as exc:
            poison.append(Poison(record, f"undecodable: {_short(exc)}"))
    return decoded, poison


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
    return str(exc)[:500]
