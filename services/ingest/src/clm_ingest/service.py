"""What every ingest route shares: validate a list of bodies, publish the valid ones, count.

Routes differ only in how bodies arrive (our contract, Segment's, a provider's webhook) and how
refusals are worded; validation, the Kafka record (key, headers) and the metrics are here.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from clm_domain.events import (
    EVENT_TYPES,
    Event,
    parse_events,
    partition_key,
    record_headers,
)
from clm_domain.personal import personal_fields
from clm_infra.privacy.ciphers import Undecryptable
from clm_infra.privacy.sealing import seal_event, subject_of
from clm_infra.privacy.store import KeyRing
from clm_ingest.normalize import SourceMismatch, field_errors, normalize, prepare
from clm_ingest.publisher import Publisher, PublishUnavailable, Record
from clm_web.prom import children

# every label is bounded: event types (or "unknown"), route templates, refusal reasons
ACCEPTED = children(
    Counter("clm_ingest_events_accepted_total", "Events acknowledged by Kafka", ["type", "route"])
)
REJECTED = children(
    Counter("clm_ingest_events_rejected_total", "Events refused", ["type", "reason", "route"])
)
BATCH_SIZE = children(
    Histogram(
        "clm_ingest_batch_size",
        "Events per request",
        ["route"],
        buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
    )
)


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    reason: str  # bounded: a pydantic error type, "source_mismatch", "unmapped", …
    errors: list[dict[str, str]]

    def message(self) -> str:
        return "; ".join(f"{e['field']}: {e['message']}" for e in self.errors)


@dataclass(slots=True)
class Checked:
    """The bodies of one request, sorted into valid events and refusals (by index)."""

    events: list[tuple[int, Event]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def _type_label(body: Any) -> str:
    kind = body.get("type") if isinstance(body, dict) else None
    return kind if isinstance(kind, str) and kind in EVENT_TYPES else "unknown"


def check(
    bodies: Sequence[Any],
    *,
    source: str,
    received_at: datetime,
    route: str,
    sent_at: Any | None = None,
) -> Checked:
    """Validate each body (see :func:`normalize`); count the refused ones.

    Fast path: every body prepared, then all validated in one call; only when that fails is
    each body validated on its own, to sort the valid ones from the refused ones.
    """
    out = Checked()
    try:
        prepared = [
            prepare(body, source=source, received_at=received_at, sent_at=sent_at)
            if isinstance(body, dict)
            else body
            for body in bodies
        ]
        out.events = list(enumerate(parse_events(prepared, now=received_at)))
    except (ValidationError, SourceMismatch):
        out = _one_by_one(bodies, source=source, received_at=received_at, sent_at=sent_at)
    for r in out.rejected:
        REJECTED(_type_label(bodies[r.index]), r.reason, route).inc()
    BATCH_SIZE(route).observe(len(bodies))
    return out


def _one_by_one(
    bodies: Sequence[Any], *, source: str, received_at: datetime, sent_at: Any | None
) -> Checked:
    """Each body validated on its own: the valid events and the refusals, by index."""
    out = Checked()
    for index, body in enumerate(bodies):
        try:
            event = normalize(body, source=source, received_at=received_at, sent_at=sent_at)
        except ValidationError as exc:
            errors = field_errors(exc)
            reason = exc.errors()[0]["type"] if exc.errors() else "invalid"
            out.rejected.append(Rejection(index, reason, errors))
        except SourceMismatch as exc:
            out.rejected.append(
                Rejection(index, "source_mismatch", [{"field": "source", "message": str(exc)}])
            )
        else:
            out.events.append((index, event))
    return out


def reject(type_label: str, reason: str, route: str, count: int = 1) -> None:
    """Count refusals decided before validation (bad JSON, limits, unavailable broker)."""
    REJECTED(type_label, reason, route).inc(count)


async def records(keyring: KeyRing, topic: str, events: Sequence[Event]) -> list[Record]:
    """The events' Kafka records: keyed by customer, their personal fields sealed under their
    subject's data key (made on first use); schema version, source, type headers."""
    found = [personal_fields(e) for e in events]
    subjects = [subject_of(e, f) for e, f in zip(events, found, strict=True)]
    try:
        keys = await keyring.keys_for({s for s in subjects if s is not None})
    except Undecryptable as exc:
        # a data key wrapped by a master key this ingest lacks (a rotation rolled out to the
        # rotating CLI before this replica): retryable once the key reaches it, so a 503
        raise PublishUnavailable(f"a data key does not open here ({exc})") from exc
    return [
        Record(
            topic,
            partition_key(event).encode(),
            seal_event(event, None if subject is None else keys[subject], personal),
            record_headers(event),
        )
        for event, personal, subject in zip(events, found, subjects, strict=True)
    ]


async def publish(
    publisher: Publisher,
    keyring: KeyRing,
    topic: str,
    events: Sequence[Event],
    *,
    route: str,
) -> None:
    """Publish all, returning once the broker acknowledged every one (else PublishUnavailable;
    Postgres away for the data keys: its error)."""
    if not events:
        return
    by_type = collections.Counter(e.type for e in events)
    try:
        await publisher.publish_many(await records(keyring, topic, events))
    except Exception:
        for type_, n in by_type.items():
            REJECTED(type_, "unavailable", route).inc(n)
        raise
    for type_, n in by_type.items():
        ACCEPTED(type_, route).inc(n)


async def publish_checked(
    publisher: Publisher, keyring: KeyRing, topic: str, checked: Checked, *, route: str
) -> None:
    """Publish the valid events of a request (PublishUnavailable when not acknowledged)."""
    await publish(publisher, keyring, topic, [e for _, e in checked.events], route=route)
