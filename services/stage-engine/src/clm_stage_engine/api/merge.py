"""Merging two known customers: an explicit, logged operation (write key)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from clm_domain.events import TEXT_PATTERN
from clm_domain.lifecycle import Transition
from clm_stage_engine import repository
from clm_stage_engine.api.customers import CustomerId, admin, customer_doc, not_found
from clm_stage_engine.deps import State, app_state
from clm_stage_engine.processor import counted, fold_timeline
from clm_stage_engine.records import merge_record, removal_record, restatement_records
from clm_stage_engine.webhooks import stage_change_deliveries
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
    now = datetime.now(UTC)
    async with state.engine.begin() as conn:
        rows = await repository.lock_customers(conn, sorted({customer_id, other}))
        missing = [c for c in (customer_id, other) if c not in rows]
        if missing:
            raise not_found(missing[0])
        events = await repository.load_events(conn, [customer_id, other])
        before_merge = counted(
            [(c, rows[c], events.get(c, [])) for c in (customer_id, other)], state.rules
        )
        timeline, _ = fold_timeline(
            customer_id,
            [*events.get(customer_id, []), *events.get(other, [])],
            state.rules,
            until=now,
        )
        merged = timeline.state
        assert merged is not None
        before = rows[customer_id]
        await repository.absorb_profiles(conn, customer_id, [other])
        await repository.insert_links(conn, [(other, customer_id, f"merge:{now.isoformat()}")])
        await repository.upsert_customers(conn, [merged])
        move = None
        if merged.stage != before.stage:
            move = Transition(customer_id, before.stage, merged.stage, now, "", f"merged {other}")
            await repository.insert_transitions(conn, [move])
            # announced like a batch's moves, in the same transaction as the move itself
            subscriptions = await repository.active_subscriptions(conn)
            await repository.enqueue_deliveries(
                conn, stage_change_deliveries([move], subscriptions)
            )
        # the two profiles' timelines as counted are taken back and the merged one added (the
        # survivor's and the absorbed profile's records say so, and say they are restated)
        restatements = restatement_records(
            customer_id,
            cause=f"merge:{other}>{customer_id}",
            reason="customer merge",
            retract=before_merge,
            add=[timeline],
            at=now,
        )
        await repository.insert_outbox(
            conn,
            state.settings.topics.lifecycle,
            [
                (
                    customer_id,
                    removal_record(
                        "identity_merge",
                        f"{other}>{customer_id}",
                        other,
                        rows[other].stage.value,
                        merged_into=customer_id,
                        restated=True,
                    ),
                ),
                (customer_id, merge_record(customer_id, other, before, merged, move, now)),
                *((customer_id, r) for r in restatements),
            ],
        )
    log.info(
        "customers merged",
        extra={"into": customer_id, "merged": other, "by_source": principal.source},
    )
    return {"merged": other, "into": customer_id, "customer": customer_doc(state, merged)}
