"""Read API: a customer's stage, facts and history (read token)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from clm_common.auth import Principal, authenticate
from clm_common.problem import ProblemError
from clm_stage_engine import repository
from clm_stage_engine.deps import State, app_state

router = APIRouter(prefix="/v1/customers", tags=["customers"])

CustomerId = Annotated[str, Path(min_length=1, max_length=200)]


async def reader(request: Request, state: Annotated[State, Depends(app_state)]) -> Principal:
    return await authenticate(request, state.verifier, "read")


@router.get(
    "/{customer_id}",
    summary="A customer's lifecycle stage and running facts",
    responses={401: {}, 404: {"description": "unknown customer"}},
)
async def get_customer(
    customer_id: CustomerId,
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(reader)],
) -> dict[str, Any]:
    async with state.engine.connect() as conn:
        customer = await repository.get_customer(conn, customer_id)
    if customer is None:
        raise ProblemError(404, "Not Found", f"no customer {customer_id!r}")
    row = repository.row_from_state(customer)
    return {k: repository.jsonable(v) for k, v in row.items()}


@router.get(
    "/{customer_id}/history",
    summary="A customer's stage transitions, oldest first",
    responses={401: {}, 404: {"description": "unknown customer"}},
)
async def get_history(
    customer_id: CustomerId,
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(reader)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    async with state.engine.connect() as conn:
        if await repository.get_customer(conn, customer_id) is None:
            raise ProblemError(404, "Not Found", f"no customer {customer_id!r}")
        history = await repository.get_history(conn, customer_id, limit)
    return {
        "customer_id": customer_id,
        "transitions": [{k: repository.jsonable(v) for k, v in t.items()} for t in history],
    }
