"""The predictive models over HTTP: the current version (read token) and a refit now (admin)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from clm_stage_engine.api.customers import admin, jsonable, reader
from clm_stage_engine.deps import State, app_state
from clm_stage_engine.repository import models
from clm_stage_engine.usecases.refit import refit
from clm_web.auth import Principal
from clm_web.problem import ProblemError

router = APIRouter(prefix="/v1/model", tags=["predictions"])

_ATTEMPT = ("id", "attempted_at", "outcome", "reason", "trigger", "customers", "repeat_customers")


def fit_doc(row: dict[str, Any]) -> dict[str, Any]:
    """A ``model_fits`` row as the API shows it (``version``: its id)."""
    doc = {k: jsonable(v) for k, v in row.items() if k != "id"}
    return {"version": row["id"], **doc}


def model_doc(
    state: State, current: dict[str, Any] | None, last: dict[str, Any] | None
) -> dict[str, Any]:
    settings = state.settings.model
    return {
        "current": None if current is None else fit_doc(current),
        "last_attempt": None if last is None else {k: jsonable(last[k]) for k in _ATTEMPT},
        "horizon_months": settings.horizon_months,
        "monthly_discount": settings.monthly_discount,
        "refit_interval_s": settings.refit_interval_s,
    }


@router.get(
    "",
    summary="The model version the scores use, and the last fit attempt",
    responses={401: {}, 403: {}},
)
async def show(
    state: Annotated[State, Depends(app_state)], _: Annotated[Principal, Depends(reader)]
) -> dict[str, Any]:
    async with state.engine.connect() as conn:
        current = await models.latest_fitted(conn)
        last = await models.latest_attempt(conn)
    return model_doc(state, current, last)


@router.post(
    "/fit",
    summary="Refit the models now from every customer's facts",
    description=(
        "Fits BG/NBD (purchases) and one Gamma-Gamma spend model per currency, stores the "
        "parameters as a new model version and scores with them at once. With too few repeat "
        "customers the fit is refused and stored as such (the previous version stays). 409 "
        "while another replica fits."
    ),
    responses={401: {}, 403: {"description": "not an admin key"}, 409: {"description": "busy"}},
)
async def fit(
    state: Annotated[State, Depends(app_state)], _: Annotated[Principal, Depends(admin)]
) -> dict[str, Any]:
    row = await refit(
        state.engine,
        datetime.now(UTC),
        trigger="manual",
        min_repeat_customers=state.settings.model.min_repeat_customers,
    )
    if row is None:
        raise ProblemError(409, "Conflict", "another replica is fitting the models now")
    state.models.fitted(row)
    return fit_doc(row)
