"""The predictive KPIs of a window, read through the prediction read model.

Every read looks up the current model version (one row), so a new fit shows at once. The
figures depend on the model version, today's UTC day and the customers' facts, and scoring
means reading every customer concerned, so each is kept ``kpi_cache_s`` seconds under its
(version, day) — the customer base's expected purchases once, the mean predicted CLV per set
of purchasers (at most ``SETS_KEPT`` of them): a KPI request or a gauge refresh does not
rescore a large base or a 90-day window's purchasers each time. A new purchaser makes a new
set, so it is scored at once; the facts of customers already counted (a repeat purchase) are
at most that old.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from datetime import date
from decimal import Decimal

from pyroaring import BitMap, FrozenBitMap
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clm_metrics.predicted import Predicted, base_expected_purchases, mean_clv
from clm_metrics.repository import predictions
from clm_predict.live import Horizon, ModelVersion, version_from_row
from clm_predict.rfm import day_number

#: Purchaser sets whose mean predicted CLV is kept (the gauges' windows, recent requests).
SETS_KEPT = 64


class Forecasts:
    """Computes :class:`Predicted` for windows, in the reporting ``currency``, keeping each
    figure ``ttl_s`` seconds per (model version, UTC day)."""

    def __init__(
        self,
        currency: str,
        horizon: Horizon,
        ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.currency = currency
        self.horizon = horizon
        self._ttl = ttl_s
        self._clock = clock
        self._kept: OrderedDict[Hashable, tuple[float | None, float]] = OrderedDict()

    async def predicted(
        self,
        engine: AsyncEngine,
        purchasers: BitMap | None,
        today: date,
    ) -> Predicted:
        """The KPIs on ``today`` (UTC) of a window whose purchasers are ``purchasers`` (metrics
        customer numbers; None: its CLV is not asked for)."""
        async with engine.connect() as conn:
            row = await predictions.current_model(conn)
            if row is None:
                return Predicted()
            model, day = version_from_row(row), day_number(today)
            base = await self._kept_or(
                ("base", model.version, day), lambda: self._base(conn, model, day)
            )
            clv = None
            if purchasers is not None and self.currency in model.gamma_gamma:
                key = ("clv", model.version, day, FrozenBitMap(purchasers))
                clv = await self._kept_or(key, lambda: self._clv(conn, model, day, purchasers))
        return Predicted(None if clv is None else Decimal(repr(clv)), base)

    async def _kept_or(
        self, key: Hashable, compute: Callable[[], Awaitable[float | None]]
    ) -> float | None:
        """The figure kept under ``key`` while fresh, else ``compute()``'s (then kept)."""
        now = self._clock()
        kept = self._kept.get(key)
        if kept is not None and now - kept[1] < self._ttl:
            self._kept.move_to_end(key)
            return kept[0]
        value = await compute()
        self._kept[key] = (value, now)
        self._kept.move_to_end(key)
        while len(self._kept) > SETS_KEPT + 1:
            self._kept.popitem(last=False)
        return value

    async def _base(self, conn: AsyncConnection, model: ModelVersion, day: int) -> float:
        return base_expected_purchases(model, await predictions.base_facts(conn), day)

    async def _clv(
        self, conn: AsyncConnection, model: ModelVersion, day: int, purchasers: BitMap
    ) -> float | None:
        groups = await predictions.numbered_facts(conn, list(purchasers), self.currency)
        return mean_clv(model, self.currency, groups, day, self.horizon)
