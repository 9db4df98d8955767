"""Merging two known customers: an explicit, logged operation (write key)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from clm_domain.events import TEXT_PATTERN
from clm_stage_engine.api.customers import CustomerId, admin, changing_customers, customer_doc
from clm_stage_engine.deps import State, app_state
from clm_stage_engine.usecases.merge import merge_customers
from clm_web.auth import Principal
from clm_web.problem import ProblemError

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/customers", tags=["customers"])


class MergeIn(BaseModel):
    source: str = Field(
        alias="from",
        min_length=1,
        max_length=200,
        pattern=TEXT_PATTERN,
        description="The customer merged away.",
    )


@router.post(
    "/{customer_id}/merge",
    summary="Merge another known customer into this one",
    description=(
        "Both customers' events, history and links move to `customer_id`, whose state is "
        "rebuilt from the union of their events (first touch kept); the other id is linked to "
        "it, so its later events land here. Logged, and announced on the lifecycle stream (the "
        "merged-away profile's `identity_merge` record, the survivor's `customer_merge` record "
        "with its stage before and after) and, when the survivor's stage changed, to the "
        "stage-change webhook subscribers."
    ),
    responses={401: {}, 403: {}, 404: {"description": "either customer unknown"}, 422: {}},
)
async def merge(
    customer_id: CustomerId,
    body: MergeIn,
    state: Annotated[State, Depends(app_state)],
    principal: Annotated[Principal, Depends(admin)],
) -> dict[str, Any]:
    other = body.source
    if other == customer_id:
        raise ProblemError(
            422,
            "Invalid request",
            "cannot merge a customer into itself",
            errors=[{"field": "from", "message": "same as the target customer"}],
        )
    model = await state.models.for_rules(state.rules)
    async with changing_customers(state) as conn:
        merged = await merge_customers(
            conn,
            customer_id,
            other,
            rules=state.rules,
            topic=state.settings.topics.lifecycle,
            now=datetime.now(UTC),
            model=model,
            segmenting=await state.segmenting(),
        )
    log.info(
        "customers merged",
        extra={"into": customer_id, "merged": other, "by_source": principal.source},
    )
    return {"merged": other, "into": customer_id, "customer": customer_doc(state, merged.after)}
