"""A service app in process for integration tests: its lifespan entered, a client on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI


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
