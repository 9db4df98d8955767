"""The running app's typed state (built in the lifespan) and its dependency."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.fernet import MultiFernet
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain.pseudonyms import Pseudonyms
from clm_domain.rules import LifecycleRules
from clm_infra.privacy.ciphers import MasterKeys
from clm_infra.webhook_urls import UrlPolicy
from clm_stage_engine.model_cache import ModelCache
from clm_stage_engine.predictions import Horizon, score_source
from clm_stage_engine.segment_cache import SegmentCache
from clm_stage_engine.settings import StageEngineSettings
from clm_stage_engine.usecases.segments import Segmenting
from clm_web.auth import KeyVerifier


@dataclass(slots=True)
class State:
    settings: StageEngineSettings
    engine: AsyncEngine
    verifier: KeyVerifier
    rules: LifecycleRules
    pseudonyms: Pseudonyms  # keyed hashes of erased and anonymised customers
    secrets_box: MultiFernet  # seals webhook subscription secrets
    url_policy: UrlPolicy  # where webhooks may go
    models: ModelCache  # the predictive models' current version
    masters: MasterKeys  # unwrap the data keys: the read API opens events' personal fields
    segments: SegmentCache = field(default_factory=SegmentCache)  # the sweeper's, the API's

    async def segmenting(self) -> Segmenting:
        """What keeps memberships outside a consumer batch, with today's model's scores."""
        model = self.settings.model
        horizon = Horizon(model.horizon_months, model.monthly_discount)
        scores = score_source(await self.models.current(), horizon)
        return Segmenting(self.segments, self.settings.topics.segments, scores)


async def app_state(request: Request) -> State:
    """Async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool."""
    state: State = request.app.state.clm
    return state
