"""The running app's typed state (built in the lifespan) and its dependency."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_common.auth import KeyVerifier
from clm_common.rules import LifecycleRules
from clm_stage_engine.settings import StageEngineSettings


@dataclass(slots=True)
class State:
    settings: StageEngineSettings
    engine: AsyncEngine
    verifier: KeyVerifier
    rules: LifecycleRules


async def app_state(request: Request) -> State:
    """Async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool."""
    state: State = request.app.state.clm
    return state
