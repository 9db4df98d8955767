"""Signed webhooks: Shopify, Stripe, Zendesk, and our generic one (review sites and others).

Each delivery is checked against the live secrets of its provider (``clm webhooks add``); the
secret that matches names the source the events are recorded for (``?source=`` narrows the
search). A bad, missing or stale signature is 401 and nothing is published. A topic we do not
use is acknowledged (200, ``ignored``) so the provider does not retry it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from clm_ingest import service, signatures, webhooks
from clm_ingest.api.events import REFUSALS, publish_checked, too_deep_body
from clm_ingest.deps import AppState, State
from clm_ingest.signatures import BadSignature
from clm_web.problem import ProblemError

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

Verify = Callable[[bytes], None]  # raises BadSignature for one secret
Adapter = Callable[[Any], list[dict[str, Any]]]  # a provider's payload → its event bodies
SourceParam = Annotated[
    str | None,
    Query(description="Only this source's secrets are tried (default: all of the provider's)"),
]
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "stored by Kafka (`accepted`), or a topic we do not use (`ignored`)"},
    **{k: v for k, v in REFUSALS.items() if k != 429},
    403: {"description": "the generic webhook's event names another source than the secret's"},
    401: {"description": "missing, wrong or stale signature; nothing published"},
    422: {"description": "the payload lacks what its topic needs"},
    503: {"description": "Kafka unavailable or webhook secrets not configured; retry"},
}


async def _verified_source(state: State, provider: str, only: str | None, verify: Verify) -> str:
    if state.secrets is None:
        raise ProblemError(
            503,
            "Service Unavailable",
            "webhook secrets are not configured (CLM_SECRETS_KEY)",
            headers={"Retry-After": str(state.settings.ingest_retry_after_s)},
        )
    candidates = [
        (source, secret)
        for source, secret in await state.secrets.for_provider(provider)
        if only is None or source == only
    ]
    why = f"no {provider} webhook secret" + (f" for source {only!r}" if only else "")
    for source, secret in candidates:
        try:
            verify(secret)
        except BadSignature as exc:
            # a matching but stale signature is the more useful answer
            if "from now" in str(exc) or why.startswith("no "):
                why = str(exc)
            continue
        return source
    service.reject("unknown", "bad_signature", f"/v1/webhooks/{provider}")
    raise ProblemError(401, "Unauthorized", why)


async def _timestamped_hex(
    request: Request, state: State, provider: str, only: str | None, header_name: str
) -> tuple[bytes, str]:
    """The raw body and its source, for Stripe's ``t=…,v1=…`` scheme (also our generic one)."""
    raw = await request.body()
    header = request.headers.get(header_name)
    now = datetime.now(UTC)
    tolerance = state.settings.ingest_webhook_tolerance_s
    found = await _verified_source(
        state,
        provider,
        only,
        lambda s: signatures.timestamped_hex(
            s, raw, header, now, name=header_name, tolerance_s=tolerance
        ),
    )
    return raw, found


async def _zendesk_signed(request: Request, state: State, only: str | None) -> tuple[bytes, str]:
    """The raw body and its source, for Zendesk's signed timestamp and body."""
    raw = await request.body()
    signature = request.headers.get("x-zendesk-webhook-signature")
    timestamp = request.headers.get("x-zendesk-webhook-signature-timestamp")
    now = datetime.now(UTC)
    tolerance = state.settings.ingest_webhook_tolerance_s
    found = await _verified_source(
        state,
        "zendesk",
        only,
        lambda s: signatures.zendesk(s, raw, signature, timestamp, now, tolerance_s=tolerance),
    )
    return raw, found


def _json(raw: bytes, route: str) -> Any:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        too_deep_body(raw, route)
        service.reject("unknown", "bad_json", route)
        raise ProblemError(400, "Bad Request", f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProblemError(
            422,
            "Invalid payload",
            "the payload must be a JSON object",
            errors=[{"field": "body", "message": "must be an object"}],
        )
    return doc


async def _accept(
    state: State, source: str, docs: list[dict[str, Any]], route: str
) -> JSONResponse:
    if not docs:
        return JSONResponse({"status": "ignored"})
    checked = service.check(docs, source=source, received_at=datetime.now(UTC), route=route)
    if checked.rejected:
        errors = [e for r in checked.rejected for e in r.errors]
        detail = "; ".join(r.message() for r in checked.rejected)
        if any(r.reason == "source_mismatch" for r in checked.rejected):
            # the secret that verified names the source; the body cannot claim another one
            raise ProblemError(403, "Forbidden", detail, errors=errors)
        raise ProblemError(422, "Invalid event", detail, errors=errors)
    await publish_checked(state, checked, route)
    return JSONResponse(
        {"status": "accepted", "event_ids": [e.event_id for _, e in checked.events]}
    )


async def _adapt_and_accept(
    state: State, provider: str, source: str, raw: bytes, adapt: Adapter
) -> JSONResponse:
    """A verified delivery's body, read as the provider's payload, published as its events."""
    route = f"/v1/webhooks/{provider}"
    payload = _json(raw, route)
    try:
        docs = adapt(payload)
    except webhooks.PayloadInvalid as exc:
        raise ProblemError(
            422,
            "Invalid payload",
            f"{exc.field}: {exc.message}",
            errors=[{"field": exc.field, "message": exc.message}],
        ) from None
    return await _accept(state, source, docs, route)


def _body_doc(description: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    }


@router.post(
    "/shopify",
    summary="Shopify orders/create → purchase, refunds/create → refund",
    responses=RESPONSES,
    openapi_extra=_body_doc("Shopify's order or refund payload"),
)
async def shopify(request: Request, state: AppState, source: SourceParam = None) -> JSONResponse:
    raw = await request.body()
    header = request.headers.get("x-shopify-hmac-sha256")
    found = await _verified_source(
        state, "shopify", source, lambda s: signatures.shopify(s, raw, header)
    )
    # X-Shopify-Event-Id / X-Shopify-Webhook-Id are not signed: the event id comes from the
    # body (see webhooks.shopify); the topic header only picks among the topics we map
    topic = request.headers.get("x-shopify-topic", "")
    return await _adapt_and_accept(
        state, "shopify", found, raw, lambda payload: webhooks.shopify(topic, payload)
    )


@router.post(
    "/stripe",
    summary=(
        "Stripe charge.succeeded / invoice.paid → purchase, charge.refunded → refund, "
        "customer.subscription.deleted → subscription_cancelled"
    ),
    responses=RESPONSES,
    openapi_extra=_body_doc("Stripe's event object"),
)
async def stripe(request: Request, state: AppState, source: SourceParam = None) -> JSONResponse:
    raw, found = await _timestamped_hex(request, state, "stripe", source, "Stripe-Signature")
    return await _adapt_and_accept(state, "stripe", found, raw, webhooks.stripe)


@router.post(
    "/zendesk",
    summary="Zendesk ticket created / solved (with its satisfaction rating) → support_ticket",
    responses=RESPONSES,
    openapi_extra=_body_doc("Zendesk event webhook, or the trigger body the README gives"),
)
async def zendesk(request: Request, state: AppState, source: SourceParam = None) -> JSONResponse:
    raw, found = await _zendesk_signed(request, state, source)
    # the event id comes from the signed body, never X-Zendesk-Webhook-Invocation-Id
    return await _adapt_and_accept(state, "zendesk", found, raw, webhooks.zendesk)


@router.post(
    "/generic",
    summary="One event of contract v1, signed: X-CLM-Signature: t=<unix>,v1=<hex HMAC>",
    description=(
        "For review sites and other senders: the body is one event as for `POST /v1/events`; "
        "`X-CLM-Signature` is `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + '.' + body)>`, "
        "accepted within the tolerance (5 minutes) of our clock."
    ),
    responses=RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Event"}}},
        }
    },
)
async def generic(request: Request, state: AppState, source: SourceParam = None) -> JSONResponse:
    raw, found = await _timestamped_hex(request, state, "generic", source, "X-CLM-Signature")
    return await _adapt_and_accept(state, "generic", found, raw, lambda payload: [payload])
