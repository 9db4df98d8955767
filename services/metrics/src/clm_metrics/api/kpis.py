"""KPI endpoints (read token): ``/v1/kpis``, ``/v1/kpis/{name}/series``, ``/v1/lifecycle/map``,
``/v1/cohorts/retention``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from clm_domain import bounds
from clm_domain.events import TEXT_PATTERN
from clm_domain.kpis import parse_window, window_bounds
from clm_metrics import service
from clm_metrics.deps import State, app_state
from clm_metrics.formulas import WindowInputs, compute_kpis, lifecycle_map
from clm_metrics.repository import segment_reads
from clm_metrics.segment_kpis import SegmentInfo, parse_ref
from clm_web.auth import Principal, authenticate
from clm_web.problem import ProblemError

router = APIRouter(prefix="/v1", tags=["kpis"])

#: Every KPI name ``/v1/kpis`` answers (series accept the scalar ones).
KPI_NAMES = frozenset(
    compute_kpis(
        WindowInputs(totals={}, stages_at_start={}, stages_at_end={}, all_time={}),
        reporting_currency="USD",
    )
)
SCALAR_KPIS = frozenset(
    name
    for name, value in compute_kpis(
        WindowInputs(totals={}, stages_at_start={}, stages_at_end={}, all_time={}),
        reporting_currency="USD",
    ).items()
    if not isinstance(value, dict) and name != "currency"
)


async def reader(request: Request, state: Annotated[State, Depends(app_state)]) -> Principal:
    return await authenticate(request, state.verifier, "read")


def _invalid(field: str, message: str) -> ProblemError:
    return ProblemError(
        422, "Invalid request", message, errors=[{"field": field, "message": message}]
    )


def _span(text: str, field: str) -> timedelta:
    try:
        return parse_window(text)
    except ValueError as exc:
        raise _invalid(field, str(exc)) from None


def _in_bounds(at: datetime, field: str) -> datetime:
    """``at`` in UTC, within the event contract's time bounds (or a 422 naming ``field``)."""
    try:
        return bounds.utc_time(at)
    except ValueError as exc:
        raise _invalid(field, f"{field} {exc}") from None


def resolve_range(
    state: State,
    now: datetime,
    window: str | None,
    from_: datetime | None,
    to: datetime | None,
) -> tuple[datetime, datetime]:
    """``[from, to)`` in whole minutes, widened to the grain still kept at that age."""
    if from_ is not None or to is not None:
        if window is not None:
            raise _invalid("window", "give either window or from/to, not both")
        if from_ is None or to is None:
            raise _invalid("from" if from_ is None else "to", "from and to go together")
        if from_.tzinfo is None or to.tzinfo is None:
            raise _invalid("from", "from and to need a UTC offset")
        start, end = _in_bounds(from_, "from"), _in_bounds(to, "to")
        if end <= start:
            raise _invalid("to", "to must be after from")
        end = (
            end
            if end.replace(second=0, microsecond=0) == end
            else (end.replace(second=0, microsecond=0) + timedelta(minutes=1))
        )
    else:
        start, end = window_bounds(now, _span("24h" if window is None else window, "window"))
    retention = state.retention
    return retention.align(start, now), retention.align(end, now)


SPAN = {"pattern": "^[0-9]{1,4}[mhd]$"}  # documented; parse_window says what is wrong
Window = Annotated[
    str | None,
    Query(description="1h, 24h, 7d, 30d, 90d or e.g. 90m (up to 731d)", json_schema_extra=SPAN),
]
From = Annotated[datetime | None, Query(alias="from", description="RFC 3339, with to")]
To = Annotated[datetime | None, Query(description="RFC 3339, with from")]
Source = Annotated[str | None, Query(max_length=200, pattern=TEXT_PATTERN)]
Channel = Annotated[str | None, Query(max_length=200, pattern=TEXT_PATTERN)]
SegmentParam = Annotated[
    str | None,
    Query(
        max_length=200,
        pattern=TEXT_PATTERN,
        description="A segment's id or name: its KPIs (size, entries, exits) instead",
    ),
]


@dataclass(frozen=True, slots=True)
class Selection:
    """The range and filters a KPI request asked for, resolved."""

    window: str | None
    start: datetime
    end: datetime
    now: datetime
    source: str | None
    channel: str | None

    async def inputs(self, state: State, *, distinct: bool = True) -> WindowInputs:
        return await service.window_inputs(
            state.engine,
            self.start,
            self.end,
            self.now,
            source=self.source,
            channel=self.channel,
            distinct=distinct,
            cache=state.closed_days,
            forecasts=state.forecasts if distinct else None,
        )

    def bounds(self) -> dict[str, Any]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat()}


def selection(
    state: Annotated[State, Depends(app_state)],
    window: Window = None,
    from_: From = None,
    to: To = None,
    source: Source = None,
    channel: Channel = None,
) -> Selection:
    now = datetime.now(UTC)
    start, end = resolve_range(state, now, window, from_, to)
    label = ("24h" if window is None else window) if from_ is None else None
    return Selection(label, start, end, now, source, channel)


Selected = Annotated[Selection, Depends(selection)]


@router.get(
    "/kpis",
    summary="Lifecycle KPIs over a rolling window or a from/to range",
    description=(
        "Every KPI of the README's table over `[now - window, now]` in whole minutes (or "
        "`[from, to)`), by event time. Money is a decimal string in the reporting currency; "
        "a ratio with a zero denominator is null. With `segment` (an id, or the name of a "
        "segment not deleted): that segment's size at the range's end and its entries and "
        "exits in it, instead."
    ),
    responses={
        401: {},
        403: {},
        404: {"description": "unknown segment"},
        422: {"description": "bad window, filter or segment"},
    },
)
async def get_kpis(
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(reader)],
    sel: Selected,
    segment: SegmentParam = None,
) -> dict[str, Any]:
    if segment is not None:
        return await segment_kpis(state, segment, sel)
    kpis = compute_kpis(
        await sel.inputs(state), reporting_currency=state.settings.reporting_currency
    )
    return {"window": sel.window, **sel.bounds(), **kpis}


async def segment_kpis(state: State, text: str, sel: Selection) -> dict[str, Any]:
    """The KPIs of the segment ``text`` names (its id, or the name of one not deleted)."""
    if sel.source is not None or sel.channel is not None:
        raise _invalid("segment", "segment KPIs take no source or channel filter")
    try:
        ref = parse_ref(text)
    except ValueError as exc:
        raise _invalid("segment", str(exc)) from None
    async with state.engine.connect() as conn:
        found: SegmentInfo | None = None
        if ref.id is not None:
            found = await segment_reads.by_id(conn, ref.id)
        if found is None:
            found = await segment_reads.by_name(conn, ref.name)
        if found is None:
            raise ProblemError(404, "Unknown segment", f"no segment {text!r}")
        counts = await segment_reads.window_counts(conn, found.id, sel.start, sel.end)
    return {"window": sel.window, **sel.bounds(), "segment": found.document(), **counts.kpis()}


@router.get(
    "/kpis/{name}/series",
    summary="One KPI over time, step by step",
    responses={401: {}, 403: {}, 404: {"description": "unknown KPI"}, 422: {}},
)
async def get_series(
    name: str,
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(reader)],
    sel: Selected,
    step: Annotated[str, Query(description="1h, 1d, 15m …", json_schema_extra=SPAN)] = "1h",
) -> dict[str, Any]:
    if name not in SCALAR_KPIS:
        raise ProblemError(404, "Unknown KPI", f"no scalar KPI named {name!r}")
    span = _span(step, "step")
    if (sel.end - sel.start) / span > service.MAX_POINTS:
        raise _invalid("step", f"at most {service.MAX_POINTS} points: take a longer step")
    points = await service.series(
        state.engine,
        name,
        sel.start,
        sel.end,
        span,
        sel.now,
        reporting_currency=state.settings.reporting_currency,
        source=sel.source,
        channel=sel.channel,
        cache=state.closed_days,
        forecasts=state.forecasts,
    )
    return {"kpi": name, "step": step, **sel.bounds(), "points": points}


@router.get(
    "/lifecycle/map",
    summary="Customers per stage, flows between stages, time in stage, stage conversion",
    responses={401: {}, 403: {}, 422: {}},
)
async def get_lifecycle_map(
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(reader)],
    sel: Selected,
) -> dict[str, Any]:
    return {**sel.bounds(), **lifecycle_map(await sel.inputs(state, distinct=False))}


@router.get(
    "/cohorts/retention",
    summary="Acquisition cohorts (by first purchase) x periods since: share still purchasing",
    responses={401: {}, 403: {}, 422: {}},
)
async def get_cohorts(
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(reader)],
    period: Annotated[Literal["month", "week"], Query()] = "month",
) -> dict[str, Any]:
    async with state.engine.connect() as conn:
        cohorts = await service.cohort_table(conn, period)
    return {"period": period, "cohorts": cohorts}
