"""One micro-batch of ``clm.events.v1``, applied inside the consumer's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_common.consumer import BatchResult, Poison
from clm_common.events import Event, parse_event_json
from clm_common.lifecycle import customer_key
from clm_stage_engine import repository
from clm_stage_engine.processor import fold

EVENTS = Counter("clm_events_processed_total", "Events applied by the stage engine", ["type"])
DUPLICATES = Counter("clm_events_duplicate_total", "Events already applied, skipped")
TRANSITIONS = Counter(
    "clm_stage_transitions_total", "Stage moves recorded", ["from_stage", "to_stage"]
)


def decode(record: Any) -> Event:
    if record.value is None:
        raise ValueError("empty record value")
    return parse_event_json(record.value)


class EventsHandler:
    """Decode, dedupe, fold and write one batch; poison comes back for the DLQ."""

    def __init__(self, lifecycle_topic: str) -> None:
        self.lifecycle_topic = lifecycle_topic

    async def __call__(self, conn: AsyncConnection, records: Sequence[Any]) -> BatchResult:
        poison: list[Poison] = []
        seen: set[tuple[str, str]] = set()
        items: list[tuple[Any, Event]] = []
        for record in records:
            try:
                event = decode(record)
            except (ValidationError, ValueError) as exc:
                poison.append(Poison(record, f"undecodable: {_short(exc)}"))
                continue
            ident = (event.source, event.event_id)
            if ident in seen:
                DUPLICATES.inc()
                continue
            seen.add(ident)
            items.append((record, event))

        fresh = await repository.claim_events(
            conn, [(e.source, e.event_id, customer_key(e)) for _, e in items]
        )
        new_items = [(r, e) for r, e in items if (e.source, e.event_id) in fresh]
        DUPLICATES.inc(len(items) - len(new_items))
        keys = {k for _, e in new_items if (k := customer_key(e)) is not None}
        loaded = await repository.lock_customers(conn, sorted(keys))
        result = fold(new_items, loaded)
        poison.extend(Poison(record, reason) for record, reason in result.failed)
        await repository.upsert_customers(conn, list(result.states.values()))
        await repository.insert_transitions(conn, result.transitions)
        await repository.insert_outbox(conn, self.lifecycle_topic, result.outbox)
        for _, event in new_items:
            EVENTS.labels(event.type).inc()
        for t in result.transitions:
            TRANSITIONS.labels(t.from_stage.value if t.from_stage else "none", t.to_stage).inc()
        return BatchResult(poison=poison, applied=result.applied)


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
    return str(exc)[:500]
