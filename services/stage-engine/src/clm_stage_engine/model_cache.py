"""The model version this replica scores with, re-read from Postgres every ``reload_s``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain.p_alive import AliveModel
from clm_domain.rules import LifecycleRules
from clm_stage_engine.predictions import ModelVersion, alive_model, version_from_row
from clm_stage_engine.repository import models

VERSION = Gauge("clm_model_version", "The predictive model version this replica scores with")
FITTED = Gauge("clm_model_fitted_timestamp_seconds", "When the scored model version was fitted")
PARAMETER = Gauge(
    "clm_model_parameter",
    "The scored BG/NBD parameters (r, alpha, a, b) and Gamma-Gamma's (p, q, v) per currency",
    ["model", "name", "currency"],
)


def _expose(model: ModelVersion | None) -> None:
    if model is None:
        return
    VERSION.set(model.version)
    FITTED.set(model.fitted_at.timestamp())
    for name in ("r", "alpha", "a", "b"):
        PARAMETER.labels("bgnbd", name, "").set(getattr(model.bgnbd, name))
    for currency, gg in model.gamma_gamma.items():
        for name in ("p", "q", "v"):
            PARAMETER.labels("gamma_gamma", name, currency).set(getattr(gg, name))


class ModelCache:
    def __init__(self, engine: AsyncEngine, reload_s: float) -> None:
        self.engine = engine
        self.reload_s = reload_s
        self._model: ModelVersion | None = None
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def current(self) -> ModelVersion | None:
        """The newest fitted version (None: no fit yet); one query a ``reload_s`` at most."""
        if time.monotonic() - self._loaded_at < self.reload_s:
            return self._model
        async with self._lock:
            if time.monotonic() - self._loaded_at >= self.reload_s:
                async with self.engine.connect() as conn:
                    row = await models.latest_fitted(conn)
                self._model = None if row is None else version_from_row(row)
                self._loaded_at = time.monotonic()
                _expose(self._model)
        return self._model

    async def for_rules(self, rules: LifecycleRules) -> AliveModel | None:
        """The model the lifecycle's P(alive) rule reads: None with the rule off (then no
        query at all) or before the first fit."""
        if rules.at_risk.p_alive_below is None:
            return None
        return alive_model(await self.current())

    def fitted(self, row: dict[str, Any]) -> None:
        """A fit this replica just stored: score with it at once."""
        if row.get("outcome") == "fitted":
            self._model = version_from_row(row)
            self._loaded_at = time.monotonic()
            _expose(self._model)
