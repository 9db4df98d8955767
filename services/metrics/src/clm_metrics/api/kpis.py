"""``GET /v1/kpis``: the lifecycle KPIs of a rolling window (read token)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from clm_common.auth import Principal, authenticate
from clm_common.kpis import parse_window, window_bounds
from clm_common.problem import ProblemError
from clm_metrics.deps import State, app_state
from clm_metrics.snapshot import kpis_for

router = APIRouter(prefix="/v1", tags=["kpis"])


async def reader(request: Request, state: Annotated[State, Depends(app_state)]) -> Principal:
    return await authenticate(request, state.verifier, "read")


@router.get(
    "/kpis",
    summary="Lifecycle KPIs over a rolling window",
    description=(
        "Counts and money over `[now - window, now]` in whole minutes, by event time. Money is "
        "a decimal string in the reporting currency; a ratio with a zero denominator is null. "
        "`customers_by_stage` is the current distribution, whatever the window."
    ),
    responses={401: {}, 422: {"description": "bad window or filter"}},
)
async def get_kpis(
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(reader)],
    window: Annotated[str, Query(description="1h, 24h, 7d, 30d, 90d or e.g. 90m")] = "24h",
    source: Annotated[str | None, Query(max_length=200)] = None,
    channel: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    try:
        span = parse_window(window)
    except ValueError as exc:
        raise ProblemError(
            422, "Invalid request", str(exc), errors=[{"field": "window", "message": str(exc)}]
        ) from None
    start, end = window_bounds(datetime.now(UTC), span)
    kpis = await kpis_for(
        state.engine,
        start,
        end,
        reporting_currency=state.settings.reporting_currency,
        source=source,
        channel=channel,
    )
    return {"window": window, "from": start.isoformat(), "to": end.isoformat(), **kpis}
