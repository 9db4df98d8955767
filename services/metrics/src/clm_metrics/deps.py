"""The running metrics service's typed state (built in the lifespan) and its dependency."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_metrics.closed_days import ClosedDayCache
from clm_metrics.forecasts import Forecasts
from clm_metrics.settings import MetricsSettings
from clm_metrics.windows import Retention
from clm_predict.live import Horizon
from clm_web.auth import KeyVerifier


@dataclass(slots=True)
class State:
    settings: MetricsSettings
    engine: AsyncEngine
    verifier: KeyVerifier
    #: Sums and distinct sets of closed days, shared by requests and the gauge refresher.
    closed_days: ClosedDayCache = field(default_factory=ClosedDayCache)
    #: The predictive KPIs (and the base's cached figure), shared alike.
    forecasts: Forecasts = field(init=False)

    def __post_init__(self) -> None:
        model = self.settings.model
        self.forecasts = Forecasts(
            self.settings.reporting_currency,
            Horizon(model.horizon_months, model.monthly_discount),
            model.kpi_cache_s,
        )

    @property
    def retention(self) -> Retention:
        return Retention(
            self.settings.metrics_minute_retention_days, self.settings.metrics_hour_retention_days
        )


async def app_state(request: Request) -> State:
    """Async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool."""
    state: State = request.app.state.clm
    return state
