"""``POST /v1/events``: one touchpoint event, 202 only after the broker acknowledged it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import ValidationError

from clm_common.auth import Principal, authenticate
from clm_common.events import SCHEMA_VERSION, dump_event, json_schema, partition_key
from clm_common.problem import ProblemError
from clm_ingest.deps import State, app_state
from clm_ingest.normalize import SourceMismatch, field_errors, normalize
from clm_ingest.publisher import PublishUnavailable

router = APIRouter(prefix="/v1", tags=["events"])

ACCEPTED = Counter("clm_ingest_events_accepted_total", "Events acknowledged by Kafka", ["type"])
REJECTED = Counter("clm_ingest_events_rejected_total", "Events refused", ["reason"])

_EXAMPLE = {
    "event_id": "5f0c6f0e-1b7a-4c1e-9f57-1f7c2a9d0b11",
    "type": "purchase",
    "customer_id": "cust-42",
    "occurred_at": "2026-11-23T10:15:00Z",
    "channel": "email",
    "properties": {"order_id": "o-1001", "amount": "59.90", "currency": "EUR"},
}


async def writer(request: Request, state: Annotated[State, Depends(app_state)]) -> Principal:
    return await authenticate(request, state.verifier, "write")


@router.post(
    "/events",
    status_code=202,
    summary="Send one touchpoint event",
    description=(
        "Validates the event, publishes it to Kafka keyed by customer and answers 202 only "
        "once the broker acknowledged it. `event_id` is the idempotency key: sending the same "
        "id again changes nothing downstream."
    ),
    responses={
        202: {"description": "accepted and stored by Kafka"},
        400: {"description": "not JSON"},
        401: {"description": "missing or unknown write key"},
        403: {"description": "the body names another source than the key's"},
        413: {"description": "body too large"},
        422: {"description": "invalid event; `errors` names each field"},
        503: {"description": "Kafka unavailable; retry after Retry-After seconds"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": json_schema(), "example": _EXAMPLE}},
        }
    },
)
async def post_event(
    request: Request,
    state: Annotated[State, Depends(app_state)],
    principal: Annotated[Principal, Depends(writer)],
) -> JSONResponse:
    received_at = datetime.now(UTC)
    body = await request.body()
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        REJECTED.labels("bad_json").inc()
        raise ProblemError(
            400,
            "Bad Request",
            f"body is not JSON: {exc}",
            errors=[{"field": "body", "message": str(exc)}],
        ) from None
    try:
        event = normalize(doc, source=principal.source, received_at=received_at)
    except ValidationError as exc:
        REJECTED.labels("invalid").inc()
        errors = field_errors(exc)
        raise ProblemError(
            422,
            "Invalid event",
            "; ".join(f"{e['field']}: {e['message']}" for e in errors),
            errors=errors,
        ) from None
    except SourceMismatch as exc:
        REJECTED.labels("source_mismatch").inc()
        raise ProblemError(
            403, "Forbidden", str(exc), errors=[{"field": "source", "message": str(exc)}]
        ) from None
    headers = [
        ("schema_version", str(SCHEMA_VERSION).encode()),
        ("source", event.source.encode()),
        ("type", event.type.encode()),
    ]
    try:
        await state.publisher.publish(
            state.settings.topic_events, partition_key(event).encode(), dump_event(event), headers
        )
    except PublishUnavailable as exc:
        REJECTED.labels("unavailable").inc()
        raise ProblemError(
            503,
            "Service Unavailable",
            f"event not stored: {exc}; retry with the same event_id",
            headers={"Retry-After": str(state.settings.ingest_retry_after_s)},
        ) from None
    ACCEPTED.labels(event.type).inc()
    return JSONResponse({"event_id": event.event_id, "status": "accepted"}, status_code=202)
