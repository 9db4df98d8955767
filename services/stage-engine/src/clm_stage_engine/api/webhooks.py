"""Webhook subscriptions: stage changes (or segment entries and exits) POSTed, signed, to a
subscriber's URL (admin key).

The URL must pass the server-side request forgery policy (:mod:`clm_infra.webhook_urls`);
the signing secret is shown once and stored encrypted (:mod:`clm_infra.subscription_secrets`).
A ``marketing`` subscription (the default) gets nothing about customers who withdrew marketing
consent; a ``service`` one gets every customer (:mod:`clm_domain.consent`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import AnyHttpUrl, BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_domain.lifecycle import STAGE_NAMES, Stage, parse_stage
from clm_infra import subscription_secrets, webhook_urls
from clm_stage_engine.api.customers import admin
from clm_stage_engine.deps import State, app_state
from clm_stage_engine.repository import segment_defs, webhooks
from clm_web.auth import Principal
from clm_web.problem import ProblemError

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


class SubscriptionIn(BaseModel):
    url: AnyHttpUrl = Field(
        description="https (http only where CLM_WEBHOOK_ALLOW_INSECURE is set); hosts on "
        "private, loopback or link-local addresses are refused unless allowed by name."
    )
    stages: list[str] | None = Field(
        default=None,
        description="Only moves into these stages (names or aliases); all if absent.",
        json_schema_extra={"items": {"type": "string", "enum": list(STAGE_NAMES)}},
    )
    segments: (
        Annotated[
            list[Annotated[int, Field(ge=1, le=2**63 - 1)]], Field(min_length=1, max_length=1000)
        ]
        | None
    ) = Field(
        default=None,
        description="Segment ids: the subscription gets these segments' entries and exits "
        "(segment.entered, segment.exited) instead of stage changes. Not with stages.",
    )
    purpose: Literal["marketing", "service"] = Field(
        default="marketing",
        description="marketing (the default): nothing about customers whose latest marketing "
        "consent is withdrawn (a customer with no consent recorded is included: opt-out); "
        "service: every customer (operational use, not marketing).",
    )


@router.post(
    "",
    status_code=201,
    summary="Subscribe a URL to stage changes or segments; the signing secret is shown once",
    responses={401: {}, 403: {"description": "not an admin key"}, 422: {}},
)
async def subscribe(
    body: SubscriptionIn,
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(admin)],
) -> dict[str, Any]:
    stages: list[Stage] | None = None
    if body.stages is not None:
        try:
            stages = [parse_stage(s) for s in body.stages]
        except ValueError as exc:
            raise ProblemError(
                422, "Invalid request", str(exc), errors=[{"field": "stages", "message": str(exc)}]
            ) from None
    refused = await webhook_urls.check(str(body.url), state.url_policy)
    if refused is not None:
        raise ProblemError(
            422, "Invalid request", f"url {refused}", errors=[{"field": "url", "message": refused}]
        )
    segments = sorted(set(body.segments)) if body.segments is not None else None
    if segments is not None and body.stages is not None:
        raise _invalid_segments("a subscription takes stages or segments, not both")
    secret = subscription_secrets.new_secret()
    async with state.engine.begin() as conn:
        if segments is not None:
            await _check_segments(conn, segments)
        sid = await webhooks.add_subscription(
            conn,
            str(body.url),
            subscription_secrets.seal(state.secrets_box, secret),
            [s.value for s in stages] if stages else None,
            segments,
            body.purpose,
        )
    return {
        "id": sid,
        "url": str(body.url),
        "stages": stages,
        "segments": segments,
        "purpose": body.purpose,
        "secret": secret,
    }


def _invalid_segments(message: str) -> ProblemError:
    return ProblemError(
        422, "Invalid request", message, errors=[{"field": "segments", "message": message}]
    )


async def _check_segments(conn: AsyncConnection, ids: list[int]) -> None:
    """A 422 naming ``segments`` unless every id is a segment (not deleted)."""
    missing = sorted(set(ids) - await segment_defs.existing_segments(conn, ids))
    if missing:
        shown = ", ".join(str(i) for i in missing[:10])
        raise _invalid_segments(
            f"no segment {shown}" if len(missing) == 1 else f"no segments {shown}"
        )


@router.get(
    "",
    summary="Active subscriptions and their delivery counts",
    responses={401: {}, 403: {"description": "not an admin key"}},
)
async def list_subscriptions(
    state: Annotated[State, Depends(app_state)], _: Annotated[Principal, Depends(admin)]
) -> dict[str, Any]:
    async with state.engine.connect() as conn:
        subs = await webhooks.list_subscriptions(conn)
    return {
        "subscriptions": [
            {
                "id": s["id"],
                "url": s["url"],
                "stages": s["stages"],
                "segments": s["segments"],
                "purpose": s["purpose"],
                "created_at": s["created_at"].isoformat(),
                "deliveries": s["deliveries"],
            }
            for s in subs
        ]
    }


@router.delete(
    "/{subscription_id}",
    summary="Unsubscribe",
    responses={401: {}, 403: {"description": "not an admin key"}, 404: {}},
)
async def unsubscribe(
    subscription_id: Annotated[int, Path(ge=1, le=2**63 - 1)],  # a bigint id
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(admin)],
) -> dict[str, Any]:
    async with state.engine.begin() as conn:
        found = await webhooks.deactivate_subscription(conn, subscription_id)
    if not found:
        raise ProblemError(404, "Not Found", f"no active subscription {subscription_id}")
    return {"id": subscription_id, "active": False}
