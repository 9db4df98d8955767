"""From a request body to a validated event: defaults, clock skew and the source rule (pure)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from clm_domain.events import Event, error_field, parse_event

_TIME: TypeAdapter[datetime] = TypeAdapter(datetime)


class SourceMismatch(Exception):
    """The body names a source other than the write key's."""


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """One ``{"field", "message"}`` per problem, fields named as in the request body."""
    return [
        {"field": error_field(tuple(e["loc"]), e["type"], e.get("ctx")), "message": e["msg"]}
        for e in exc.errors()
    ]


def corrected_time(occurred_at: Any, sent_at: Any, received_at: datetime) -> Any:
    """``occurred_at`` moved by the client's clock error, as Segment does.

    The client stamped the event (``occurred_at``) and the request (``sent_at``) with its own
    clock; ``received_at`` is ours. The event happened ``sent_at - occurred_at`` before it was
    sent, so on our clock at ``received_at - (sent_at - occurred_at)``. Values that are not
    both aware timestamps are returned unchanged (validation names them later).
    """
    try:
        occurred = _TIME.validate_python(occurred_at)
        sent = _TIME.validate_python(sent_at)
    except ValidationError:
        return occurred_at
    if occurred.tzinfo is None or sent.tzinfo is None:
        return occurred_at
    try:
        return received_at - (sent - occurred)
    except OverflowError:  # a skew beyond the calendar: no correction
        return occurred_at


def prepare(
    body: dict[str, Any], *, source: str, received_at: datetime, sent_at: Any | None = None
) -> dict[str, Any]:
    """The body with the ingest's defaults (see :func:`normalize`), not yet validated.

    Raises SourceMismatch when the body names another source than the key's.
    """
    data = dict(body)
    claimed = data.get("source")
    if claimed is not None and claimed != source:
        raise SourceMismatch(f"this key sends for source {source!r}, not {claimed!r}")
    data["source"] = source
    sent = data.pop("sent_at", sent_at)
    if "event_id" not in data:
        data["event_id"] = str(uuid.uuid4())
    if "occurred_at" not in data:
        data["occurred_at"] = received_at
    elif sent is not None:
        data["occurred_at"] = corrected_time(data["occurred_at"], sent, received_at)
    return data


def normalize(
    body: Any, *, source: str, received_at: datetime, sent_at: Any | None = None
) -> Event:
    """Validate one event body as sent by ``source`` at ``received_at``.

    Missing ``event_id`` gets a random one (returned to the caller); missing ``occurred_at`` is
    the receipt time; a ``sent_at`` (in the body, or the batch's) corrects the client's clock
    skew; ``source`` comes from the key (a different one in the body is refused).
    Raises ValidationError (422) or SourceMismatch (403).
    """
    if not isinstance(body, dict):
        return parse_event(body, now=received_at)  # raises a ValidationError naming the body
    data = prepare(body, source=source, received_at=received_at, sent_at=sent_at)
    return parse_event(data, now=received_at)
