"""An API replica (``CLM_STAGE_ENGINE_ROLE=api``): it consumes nothing and runs no worker, is
ready with Postgres alone, and answers what the workers of an ``all`` process applied."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from clm_infra.settings import CommonSettings
from clm_stage_engine.app import create_app
from clm_stage_engine.settings import StageEngineSettings
from tests.factories import event_doc
from tests.integration.apps import app_client, read_customer
from tests.integration.conftest import eventually, send_events


@asynccontextmanager
async def _serving(role: str) -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    app = create_app(StageEngineSettings(stage_engine_role=role, stage_engine_idle_recheck_s=0.5))
    async with app_client(app, "http://engine") as c:
        yield c, app


async def test_an_api_replica_serves_what_the_workers_applied_and_consumes_nothing(
    common: CommonSettings,
) -> None:
    await send_events(common, event_doc("purchase", customer_id="replica-1", event_id="p1"))
    async with _serving("api") as (api, api_app):
        assert list(api_app.state.workers.supervisors) == []  # type: ignore[attr-defined]
        ready = await api.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["checks"]) == {"postgres"}
        await asyncio.sleep(2)  # a consumer would have applied the purchase by now
        assert await read_customer(api, "replica-1") is None
        async with _serving("all") as (worker, _):

            async def applied() -> dict[str, object] | None:
                return await read_customer(api, "replica-1")

            found = await eventually(applied)
            assert found is not None
            assert found["stage"] == "conversion"
            assert await read_customer(worker, "replica-1") == found
