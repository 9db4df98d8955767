"""The model version this replica scores with, re-read from Postgres every ``reload_s``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from clm_stage_engine.predictions import ModelVersion, version_from_row
from clm_stage_engine.repository import models


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
        return self._model

    def fitted(self, row: dict[str, Any]) -> None:
        """A fit this replica just stored: score with it at once."""
        if row.get("outcome") == "fitted":
            self._model = version_from_row(row)
            self._loaded_at = time.monotonic()
