"""From a request body to a validated event: defaults and the source rule (pure)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from clm_common.events import Event, error_field, parse_event


class SourceMismatch(Exception):
    """The body names a source other than the write key's."""


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """One ``{"field", "message"}`` per problem, fields named as in the request body."""
    return [
        {"field": error_field(tuple(e["loc"]), e["type"]), "message": e["msg"]}
        for e in exc.errors()
    ]


def normalize(body: Any, *, source: str, received_at: datetime) -> Event:
    """Validate one event body as sent by ``source`` at ``received_at``.

    Missing ``event_id`` gets a random one (returned to the caller); missing ``occurred_at`` is
    the receipt time; ``source`` comes from the key (a different one in the body is refused).
    Raises ValidationError (422) or SourceMismatch (403).
    """
    if not isinstance(body, dict):
        return parse_event(body, now=received_at)  # raises a ValidationError naming the body
    data = dict(body)
    claimed = data.get("source")
    if claimed is not None and claimed != source:
        raise SourceMismatch(f"this key sends for source {source!r}, not {claimed!r}")
    data["source"] = source
    data.setdefault("event_id", str(uuid.uuid4()))
    data.setdefault("occurred_at", received_at)
    return parse_event(data, now=received_at)
