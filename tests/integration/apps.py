"""A service app in process for integration tests: its lifespan entered, a client on it
(and what reading a customer from the stage engine's takes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from tests.keys import READ


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[Any]:
    """``app`` with its lifespan entered (its workers on the real Kafka and Postgres); yields
    the ASGI app to send requests to, the one that carries the lifespan's state."""
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        yield manager.app


@asynccontextmanager
async def app_client(app: FastAPI, base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on ``app``, its lifespan entered for as long as the client is open."""
    async with running(app) as asgi:
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


async def read_customer(client: httpx.AsyncClient, cid: str) -> dict[str, Any] | None:
    """Customer ``cid`` from the stage engine's read API, or None while it has none."""
    response = await client.get(f"/v1/customers/{cid}", headers=READ)
    return response.json() if response.status_code == 200 else None
