"""Run a service's FastAPI app under uvicorn with our logging (``python -m clm_<service>``)."""

from __future__ import annotations

import gc

import uvicorn
from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from clm_infra.logconfig import configure_logging
from clm_infra.settings import CommonSettings, ServerSettings


def telemetry(settings: CommonSettings) -> TelemetryConfig:
    """FastAPI's ``telemetry=`` argument: all of it on or off with ``CLM_OTEL_ENABLED`` (off by
    default: ``docs/performance.md``, "The ingest")."""
    on = settings.otel_enabled
    return {"tracing": on, "metrics": on, "logs": on}


def serve(app: FastAPI, server: ServerSettings, *, log_level: str, gc_young: int = 10_000) -> None:
    """Run ``app``; ``gc_young``: the collector's young-generation threshold (a collection
    runs once this many more container objects are alive than after the last one)."""
    configure_logging(log_level)
    # the start-up heap frozen, young objects collected less often (docs/performance.md,
    # "The ingest": the garbage collector)
    gc.freeze()
    gc.set_threshold(gc_young, 20, 20)
    config = uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        log_config=None,
        access_log=False,
        # nothing reads the client's address or scheme (docs/performance.md, "The ingest")
        proxy_headers=False,
        timeout_graceful_shutdown=10,
        # Idle keep-alive connections stay open longer than any Retry-After we send (5 s) and
        # than the usual load balancer idle timeout (60 s): a client that waits as told and
        # reuses its connection must not race the server closing it (uvicorn's default: 5 s).
        timeout_keep_alive=75,
        lifespan="on",
    )
    uvicorn.Server(config).run()
