"""Segment-compatible Tracking API: ``/v1/track`` … ``/v1/batch`` and the browser's short paths.

The write key comes as HTTP Basic user name (Segment's server libraries) or as ``writeKey`` in
the body (analytics.js, which posts ``text/plain``). Success is Segment's ``{"success": true}``,
given only after the broker acknowledged every event; a refusal is a 4xx (or 503) with the
``{"code", "message"}`` body Segment's libraries read, never a silent 200. In a batch the valid
messages are published and the call still answers 400 naming the refused ones by index.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from clm_ingest import service
from clm_ingest.deps import AppState, Caller, State, rate_wait, verify_write_key
from clm_ingest.publisher import PublishUnavailable
from clm_ingest.refusals import SegmentError
from clm_ingest.segment import MAX_BATCH_BYTES, SegmentInvalid, to_event

router = APIRouter(prefix="/v1", tags=["segment"])

SUCCESS = {"success": True}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
}
# a sentAt that is not an RFC 3339 string is ignored (no clock correction), not refused
SENT_AT = {"description": "RFC 3339: the client's clock when sending (else ignored)"}
MESSAGE_SCHEMA = {
    "type": "object",
    "description": "A Segment message (see Segment's Tracking API spec).",
    "properties": {  # null stands for absent, as Segment's libraries may send it
        "userId": {"type": ["string", "number", "null"]},
        "anonymousId": {"type": ["string", "number", "null"]},
        "messageId": {"type": ["string", "number", "null"]},
        "event": {"type": "string"},
        "timestamp": {"type": ["string", "null"], "format": "date-time"},
        "sentAt": SENT_AT,
        "context": {"type": ["object", "null"]},
        "properties": {"type": ["object", "null"]},
        "traits": {"type": ["object", "null"]},
        "writeKey": {"type": "string"},
    },
}
BATCH_SCHEMA = {
    "type": "object",
    "required": ["batch"],
    "properties": {
        "batch": {"type": "array", "items": MESSAGE_SCHEMA},
        "sentAt": SENT_AT,
        "writeKey": {"type": "string"},
    },
}
SEGMENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "every message stored by Kafka",
        "content": {"application/json": {"example": SUCCESS}},
    },
    **{
        status: {"description": text, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
        for status, text in (
            (400, "not JSON, not a message, or some messages refused (named by index)"),
            (401, "no write key, or an unknown one"),
            (413, "body (as sent or inflated) too large"),
            (415, "a Content-Encoding other than gzip, deflate, identity"),
            (429, "the key's rate limit; retry after Retry-After seconds"),
            (503, "Kafka unavailable; retry after Retry-After seconds"),
        )
    },
}


def _basic_user(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


async def _caller(request: Request, state: State, body: Any) -> Caller:
    in_body = body.get("writeKey", "") if isinstance(body, dict) else ""
    if not isinstance(in_body, str):
        raise SegmentError(400, "invalid_message", "writeKey: must be a string")
    key = _basic_user(request) or in_body
    if not key:
        raise SegmentError(
            401, "unauthorized", "send the write key as the Basic auth user name or writeKey"
        )
    caller = await verify_write_key(state, key)
    if caller is None:
        raise SegmentError(401, "unauthorized", "unknown or revoked write key")
    return caller


async def _handle(request: Request, state: State, call: str | None) -> JSONResponse:
    """``call`` is the path's call type; None for a batch (each message names its own)."""
    route = request.url.path
    received_at = datetime.now(UTC)
    raw = await request.body()
    body = _json(raw, route)
    caller = await _caller(request, state, body)
    messages, batch_sent_at = _messages(body, raw, call, route)
    await _within_limits(state, caller, len(messages), route)
    docs, unreadable = _events_of(state, messages, call, batch_sent_at, route)
    readable = [d for d in docs if d is not None]
    positions = [i for i, d in enumerate(docs) if d is not None]
    checked = service.check(readable, source=caller.source, received_at=received_at, route=route)
    await _publish(state, checked, route)
    refused = dict(unreadable)
    for r in checked.rejected:
        refused[positions[r.index]] = r.message()
    if refused:
        detail = "; ".join(f"[{i}] {why}" for i, why in sorted(refused.items()))
        what = "message" if call is not None else f"{len(refused)} of {len(messages)} messages"
        raise SegmentError(400, "invalid_message", f"{what} refused: {detail}")
    return JSONResponse(SUCCESS)


def _json(raw: bytes, route: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        service.reject("unknown", "bad_json", route)
        raise SegmentError(400, "invalid_json", f"body is not JSON: {exc}") from None


def _messages(body: Any, raw: bytes, call: str | None, route: str) -> tuple[list[Any], Any]:
    """The messages of a call (one) or of a batch, and the batch's ``sentAt``."""
    if call is not None:
        return [body], None
    if len(raw) > MAX_BATCH_BYTES:
        service.reject("unknown", "batch_too_large", route)
        raise SegmentError(400, "batch_too_large", f"a batch is at most {MAX_BATCH_BYTES} bytes")
    messages = body.get("batch") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        service.reject("unknown", "not_a_batch", route)
        raise SegmentError(400, "invalid_batch", "the body needs a `batch` array")
    return messages, body.get("sentAt")


async def _within_limits(state: State, caller: Caller, count: int, route: str) -> None:
    """Refuse a batch of too many messages (400), or one over the key's rate limit (429)."""
    limit = state.settings.ingest_max_batch_events
    if count > limit:
        service.reject("unknown", "batch_too_large", route, count)
        raise SegmentError(400, "batch_too_large", f"at most {limit} messages in a batch")
    retry = await rate_wait(state, caller.limit_key, count)
    if retry is not None:
        service.reject("unknown", "rate_limited", route, count)
        raise SegmentError(
            429, "rate_limited", f"retry after {retry}s", headers={"Retry-After": retry}
        )


def _events_of(
    state: State, messages: list[Any], call: str | None, batch_sent_at: Any, route: str
) -> tuple[list[dict[str, Any] | None], dict[int, str]]:
    """Each message as an event body (None where unreadable), and why each unreadable one is."""
    docs: list[dict[str, Any] | None] = []
    unreadable: dict[int, str] = {}
    for index, msg in enumerate(messages):
        try:
            kind = call or (msg.get("type") if isinstance(msg, dict) else None)
            doc = to_event(
                msg,
                kind if isinstance(kind, str) else "",
                track_events=state.track_events,
                default_currency=state.settings.ingest_segment_default_currency,
            )
            if batch_sent_at is not None:
                doc.setdefault("sent_at", batch_sent_at)
            docs.append(doc)
        except SegmentInvalid as exc:
            unreadable[index] = f"{exc.field}: {exc.message}"
            service.reject("unknown", "unreadable", route)
            docs.append(None)
    return docs, unreadable


async def _publish(state: State, checked: service.Checked, route: str) -> None:
    try:
        await service.publish_checked(
            state.publisher, state.keyring, state.settings.topics.events, checked, route=route
        )
    except PublishUnavailable as exc:
        raise SegmentError(
            503,
            "unavailable",
            f"not stored: {exc}; retry",
            headers={"Retry-After": str(state.settings.ingest_retry_after_s)},
        ) from None


def _add(path: str, call: str | None, summary: str, *, short: bool = False) -> None:
    async def endpoint(request: Request, state: AppState) -> JSONResponse:
        return await _handle(request, state, call)

    schema = BATCH_SCHEMA if call is None else MESSAGE_SCHEMA
    media = "text/plain" if short else "application/json"
    router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        summary=summary,
        name=f"segment_{path.strip('/').replace('/', '_')}",
        responses=SEGMENT_RESPONSES,
        response_class=JSONResponse,
        openapi_extra={
            "requestBody": {"required": True, "content": {media: {"schema": schema}}},
            "security": [{"segmentBasic": []}],
        },
    )


for _call in ("track", "identify", "page", "screen", "group", "alias"):
    _add(f"/{_call}", _call, f"Segment {_call} call")
    _add(
        f"/{_call[0]}", _call, f"Segment {_call} call (browser short path, text/plain)", short=True
    )
_add("/batch", None, "Segment batch (up to 500 KB, 500 messages)")
_add("/b", None, "Segment batch (browser short path, text/plain)", short=True)
