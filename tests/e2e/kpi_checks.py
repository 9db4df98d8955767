"""Waiting for the metrics service's KPIs of a window to equal a truth, over HTTP."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.conftest import eventually

#: What ``/v1/kpis`` answers besides the KPIs: the window it read.
WINDOW_KEYS = ("window", "from", "to")


def kpis_of(body: dict[str, Any]) -> dict[str, Any]:
    """The KPIs of a ``/v1/kpis`` answer, without the window it names."""
    return {k: v for k, v in body.items() if k not in WINDOW_KEYS}


async def until_kpis_equal(
    metrics: httpx.AsyncClient,
    query: dict[str, str],
    want: dict[str, Any],
    *,
    timeout: float,
    failure: str,
) -> None:
    """Poll ``/v1/kpis`` with ``query`` (every second, up to ``timeout``) until its KPIs equal
    ``want``; otherwise fail with ``failure`` and every KPI that differs (got, wanted)."""

    async def counted() -> dict[str, Any] | None:
        got = kpis_of((await metrics.get("/v1/kpis", params=query)).json())
        return got if got == want else None

    try:
        await eventually(counted, timeout=timeout, every=1.0)
    except AssertionError:
        got = kpis_of((await metrics.get("/v1/kpis", params=query)).json())
        wrong = {k: (got.get(k), want.get(k)) for k in want if got.get(k) != want.get(k)}
        raise AssertionError(f"{failure}: {wrong}") from None
