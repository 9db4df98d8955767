"""Webhook subscriptions: stage changes POSTed, signed, to a subscriber's URL (admin key).

The URL must pass the server-side request forgery policy (:mod:`clm_infra.webhook_urls`);
the signing secret is shown once and stored encrypted (:mod:`clm_infra.subscription_secrets`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import AnyHttpUrl, BaseModel, Field
from sqlalchemy import func, insert, select, update

from clm_domain.lifecycle import STAGE_NAMES, Stage, parse_stage
from clm_infra import subscription_secrets, webhook_urls
from clm_infra.schema import webhook_deliveries, webhook_subscriptions
from clm_stage_engine.api.customers import admin
from clm_stage_engine.deps import State, app_state
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


@router.post(
    "",
    status_code=201,
    summary="Subscribe a URL to stage changes; the signing secret is shown once",
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
    secret = subscription_secrets.new_secret()
    async with state.engine.begin() as conn:
        sid = (
            await conn.execute(
                insert(webhook_subscriptions)
                .values(
                    url=str(body.url),
                    secret=subscription_secrets.seal(state.secrets_box, secret),
                    stages=[s.value for s in stages] if stages else None,
                )
                .returning(webhook_subscriptions.c.id)
            )
        ).scalar_one()
    return {"id": sid, "url": str(body.url), "stages": stages, "secret": secret}


@router.get(
    "",
    summary="Active subscriptions and their delivery counts",
    responses={401: {}, 403: {"description": "not an admin key"}},
)
async def list_subscriptions(
    state: Annotated[State, Depends(app_state)], _: Annotated[Principal, Depends(admin)]
) -> dict[str, Any]:
    async with state.engine.connect() as conn:
        subs = (
            await conn.execute(
                select(
                    webhook_subscriptions.c.id,
                    webhook_subscriptions.c.url,
                    webhook_subscriptions.c.stages,
                    webhook_subscriptions.c.created_at,
                )
                .where(webhook_subscriptions.c.active.is_(True))
                .order_by(webhook_subscriptions.c.id)
            )
        ).all()
        counts = await conn.execute(
            select(
                webhook_deliveries.c.subscription_id,
                webhook_deliveries.c.status,
                func.count(),
            ).group_by(webhook_deliveries.c.subscription_id, webhook_deliveries.c.status)
        )
        by_sub: dict[int, dict[str, int]] = {}
        for sid, status, n in counts:
            by_sub.setdefault(sid, {})[status] = int(n)
    return {
        "subscriptions": [
            {
                "id": s.id,
                "url": s.url,
                "stages": s.stages,
                "created_at": s.created_at.isoformat(),
                "deliveries": by_sub.get(s.id, {}),
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
        result = await conn.execute(
            update(webhook_subscriptions)
            .where(
                webhook_subscriptions.c.id == subscription_id,
                webhook_subscriptions.c.active.is_(True),
            )
            .values(active=False)
        )
    if not result.rowcount:
        raise ProblemError(404, "Not Found", f"no active subscription {subscription_id}")
    return {"id": subscription_id, "active": False}
