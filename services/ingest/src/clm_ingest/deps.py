"""The running ingest's typed state (built in the lifespan) and its dependency."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_common.auth import KeyVerifier
from clm_ingest.publisher import Publisher
from clm_ingest.settings import IngestSettings


@dataclass(slots=True)
class State:
    settings: IngestSettings
    engine: AsyncEngine
    verifier: KeyVerifier
    publisher: Publisher


def app_state(request: Request) -> State:
    state: State = request.app.state.clm
    return state
