"""The running ingest's typed state (built in the lifespan) and its dependencies."""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_infra.privacy.store import KeyRing
from clm_infra.webhook_secrets import SecretCache
from clm_ingest.publisher import Publisher
from clm_ingest.ratelimit import TokenBuckets, retry_after_header
from clm_ingest.settings import IngestSettings
from clm_web.auth import KeyVerifier, Principal, bearer_from_header
from clm_web.problem import ProblemError


@dataclass(slots=True)
class State:
    settings: IngestSettings
    engine: AsyncEngine
    verifier: KeyVerifier
    publisher: Publisher
    keyring: KeyRing  # the customers' data keys (their personal fields are sealed)
    limiter: TokenBuckets | None
    secrets: SecretCache | None  # None: CLM_SECRETS_KEY missing, webhooks answer 503
    track_events: dict[str, str]


async def app_state(request: Request) -> State:
    """Async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread
    hop per request (``docs/performance.md``, "The ingest")."""
    state: State = request.app.state.clm
    return state


#: The running app's state, as a route's parameter.
AppState = Annotated[State, Depends(app_state)]


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated writer, and the key its rate limit is counted under."""

    principal: Principal
    limit_key: str

    @property
    def source(self) -> str:
        return self.principal.source


def _caller(principal: Principal, key: str) -> Caller:
    return Caller(principal, hashlib.sha256(key.encode()).hexdigest()[:24])


async def verify_write_key(state: State, key: str) -> Caller | None:
    """The caller a write key stands for; None when unknown, revoked, or not a write key."""
    principal = await state.verifier.verify(key)
    if principal is None or principal.kind != "write":
        return None
    return _caller(principal, key)


async def writer(request: Request) -> Caller:
    """Bearer write key → caller, or a 401/403 problem.

    The state is read here, not injected: the write routes resolve this one dependency only
    (``docs/performance.md``, "The ingest").
    """
    state: State = request.app.state.clm
    return await authorize_writer(state, request.headers.get("authorization", ""))


async def authorize_writer(state: State, authorization: str) -> Caller:
    """The caller of an ``Authorization`` header's value, or a 401/403 problem."""
    key = bearer_from_header(authorization)
    principal = await state.verifier.verify(key)
    if principal is None:
        raise ProblemError(
            401, "Unauthorized", "unknown or revoked key", headers={"WWW-Authenticate": "Bearer"}
        )
    if principal.kind != "write":
        raise ProblemError(403, "Forbidden", "this endpoint needs a write key")
    return _caller(principal, key)


async def rate_wait(state: State, limit_key: str, events: int) -> str | None:
    """None when the key may send ``events`` now; else the Retry-After value, given after a
    hold (``ingest_rate_limit_hold_s``): a client that loops on its 429s without waiting gets
    a couple of answers a second per connection, not thousands that would take the CPU other
    keys' requests need."""
    if state.limiter is None:
        return None
    wait = state.limiter.take(limit_key, max(1, events))
    if wait <= 0:
        return None
    # jittered, so that many held requests do not all wake (and come back) at one instant
    spread = random.uniform(0.5, 1.5)  # noqa: S311 (timing jitter, not a secret)
    await asyncio.sleep(state.settings.ingest_rate_limit_hold_s * spread)
    return retry_after_header(wait)
