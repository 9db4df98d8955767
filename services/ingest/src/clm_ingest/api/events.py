"""``POST /v1/events`` (one) and ``POST /v1/events/batch`` (many): our own contract, v1.

2xx only after the broker acknowledged every accepted event; a batch publishes its valid events
and lists the refused ones by index.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from clm_domain import bounds
from clm_domain.events import EventType, example_event
from clm_ingest import service
from clm_ingest.deps import Caller, State, rate_wait, writer
from clm_ingest.publisher import PublishUnavailable
from clm_web.problem import ProblemError

router = APIRouter(prefix="/v1", tags=["events"])

EVENT_REF = {"$ref": "#/components/schemas/Event"}
EXAMPLES = {t.value: {"summary": t.value, "value": example_event(t.value)} for t in EventType}
REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"description": "not JSON, or not valid gzip"},
    401: {"description": "missing or unknown write key"},
    403: {"description": "a read key, or the body names another source than the key's"},
    413: {"description": "body (as sent or inflated) or batch too large"},
    415: {"description": "a Content-Encoding other than gzip, deflate, identity"},
    422: {"description": "invalid event(s); `errors` names each field"},
    429: {"description": "the key's rate limit; retry after Retry-After seconds"},
    503: {"description": "Kafka unavailable; retry after Retry-After seconds"},
}


def parse_json(body: bytes, route: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        too_deep_body(body, route)
        service.reject("unknown", "bad_json", route)
        raise ProblemError(
            400,
            "Bad Request",
            f"body is not JSON: {exc}",
            errors=[{"field": "body", "message": str(exc)}],
        ) from None


def too_deep_body(body: bytes, route: str) -> None:
    """Raise a 422 when a body the JSON parser refused nests past the contract's depth (the
    parser's own limit is far deeper): too deep is an invalid event, not "not JSON"."""
    depth = bounds.raw_depth(body)
    if depth > bounds.MAX_JSON_DEPTH:
        service.reject("unknown", "too_deep", route)
        message = f"nested {depth} levels deep; at most {bounds.MAX_JSON_DEPTH}"
        raise ProblemError(
            422, "Invalid event", message, errors=[{"field": "body", "message": message}]
        )


async def limit_rate(state: State, caller: Caller, events: int, route: str) -> None:
    retry = await rate_wait(state, caller.limit_key, events)
    if retry is not None:
        service.reject("unknown", "rate_limited", route, events)
        raise ProblemError(
            429,
            "Too Many Requests",
            f"rate limit of key for source {caller.source!r}; retry after {retry}s",
            headers={"Retry-After": retry},
        )


def unavailable(state: State, exc: PublishUnavailable) -> ProblemError:
    return ProblemError(
        503,
        "Service Unavailable",
        f"events not stored: {exc}; retry with the same event_id",
        headers={"Retry-After": str(state.settings.ingest_retry_after_s)},
    )


async def publish_checked(state: State, checked: service.Checked, route: str) -> None:
    try:
        await service.publish_checked(
            state.publisher, state.keyring, state.settings.topics.events, checked, route=route
        )
    except PublishUnavailable as exc:
        raise unavailable(state, exc) from None


async def _accepted(
    accept: Callable[[State, Caller, bytes], Awaitable[bytes]], request: Request, caller: Caller
) -> Response:
    """The routed endpoints' answer: what ``accept`` (also the hot routes' handler) answers."""
    answer = await accept(request.app.state.clm, caller, await request.body())
    return Response(answer, status_code=202, media_type="application/json")


@router.post(
    "/events",
    status_code=202,
    summary="Send one touchpoint event",
    description=(
        "Validates the event, publishes it to Kafka keyed by customer and answers 202 only "
        "once the broker acknowledged it. `event_id` is the idempotency key (generated and "
        "returned when absent); `occurred_at` defaults to the receipt time, and a `sent_at` "
        "(the client's clock when sending) corrects the client's clock skew."
    ),
    responses={202: {"description": "accepted and stored by Kafka"}, **REFUSALS},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EVENT_REF, "examples": EXAMPLES}},
        }
    },
)
async def post_event(request: Request, caller: Annotated[Caller, Depends(writer)]) -> Response:
    return await _accepted(accept_one, request, caller)


async def accept_one(state: State, caller: Caller, body: bytes) -> bytes:
    """One event in, the 202 answer's body out (once the broker acknowledged); else a problem."""
    route = "/v1/events"
    received_at = datetime.now(UTC)
    await limit_rate(state, caller, 1, route)  # first: a flood's refusals cost no parsing
    doc = parse_json(body, route)
    checked = service.check([doc], source=caller.source, received_at=received_at, route=route)
    if checked.rejected:
        (refused,) = checked.rejected
        if refused.reason == "source_mismatch":
            raise ProblemError(403, "Forbidden", refused.message(), errors=refused.errors)
        raise ProblemError(422, "Invalid event", refused.message(), errors=refused.errors)
    await publish_checked(state, checked, route)
    ((_, event),) = checked.events
    return orjson.dumps({"event_id": event.event_id, "status": "accepted"})


BATCH_SCHEMA = {
    "type": "object",
    "required": ["events"],
    "properties": {
        "events": {"type": "array", "items": EVENT_REF, "minItems": 1, "maxItems": 500},
        "sent_at": {
            "description": (
                "RFC 3339: the client's clock when sending; corrects every event's skew "
                "(an unreadable one is ignored)."
            ),
        },
    },
}


@router.post(
    "/events/batch",
    status_code=202,
    summary="Send up to 500 events (1 MiB) at once",
    description=(
        "Each event is validated on its own: the valid ones are published and the answer "
        "(202) lists them with their `event_id` and the refused ones by index with their "
        "errors. It comes only after the broker acknowledged every accepted event. When no "
        "event is valid: 422, every error named `events[i].field`."
    ),
    responses={
        202: {"description": "the valid events are stored by Kafka; `rejected` lists the rest"},
        **REFUSALS,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": BATCH_SCHEMA,
                    "example": {"events": [example_event("site_visit"), example_event("purchase")]},
                }
            },
        }
    },
)
async def post_batch(request: Request, caller: Annotated[Caller, Depends(writer)]) -> Response:
    return await _accepted(accept_batch, request, caller)


async def accept_batch(state: State, caller: Caller, body: bytes) -> bytes:
    """A batch in, the 202 answer's body out (once the broker acknowledged the valid events)."""
    route = "/v1/events/batch"
    received_at = datetime.now(UTC)
    doc = parse_json(body, route)
    events = _batch_events(state, doc, route)
    await limit_rate(state, caller, len(events), route)
    checked = service.check(
        events,
        source=caller.source,
        received_at=received_at,
        route=route,
        sent_at=doc.get("sent_at"),
    )
    if not checked.events:
        errors = [
            {"field": f"events[{r.index}].{e['field']}", "message": e["message"]}
            for r in checked.rejected
            for e in r.errors
        ]
        raise ProblemError(
            422, "Invalid events", f"all {len(events)} events were refused", errors=errors
        )
    await publish_checked(state, checked, route)
    return orjson.dumps(
        {
            "accepted": len(checked.events),
            "events": [{"index": i, "event_id": e.event_id} for i, e in checked.events],
            "rejected": [
                {"index": r.index, "reason": r.reason, "errors": r.errors} for r in checked.rejected
            ],
        }
    )


def _batch_events(state: State, doc: Any, route: str) -> list[Any]:
    """The batch's ``events``: a non-empty array (422) of at most the limit's events (413)."""
    events = doc.get("events") if isinstance(doc, dict) else None
    if not isinstance(events, list) or not events:
        service.reject("unknown", "not_a_batch", route)
        raise ProblemError(
            422,
            "Invalid batch",
            "the body must be an object with a non-empty `events` array",
            errors=[{"field": "events", "message": "a non-empty array is required"}],
        )
    limit = state.settings.ingest_max_batch_events
    if len(events) > limit:
        service.reject("unknown", "batch_too_large", route, len(events))
        raise ProblemError(
            413,
            "Content Too Large",
            f"{len(events)} events in one batch; at most {limit}",
            errors=[{"field": "events", "message": f"at most {limit} events"}],
        )
    return events
