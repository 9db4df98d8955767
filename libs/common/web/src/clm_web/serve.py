"""Run a service's FastAPI app under uvicorn with our logging (``python -m clm_<service>``)."""

from __future__ import annotations

import gc

import uvicorn
from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from clm_infra.logconfig import configure_logging
from clm_infra.settings import CommonSettings, ServerSettings


def telemetry(settings: CommonSettings) -> TelemetryConfig:
    """FastAPI's ``telemetry=`` argument: all of it on or off with ``CLM_OTEL_ENABLED``."""
    on = settings.otel_enabled
    return {"tracing": on, "metrics": on, "logs": on}


def serve(app: FastAPI, server: ServerSettings, *, log_level: str, gc_young: int = 10_000) -> None:
    """Run ``app``; ``gc_young``: the collector's young-generation threshold (see below)."""
    configure_logging(log_level)
    # A request or a batch allocates a few objects per event, nearly all short-lived: the
    # collector's default thresholds collect every ~700 allocations, and its full collections
    # rescan everything imported at start. Freeze that start-up heap and collect young objects
    # less often (profiles of the stage engine and the ingest showed collections inside the
    # hot paths' allocation sites, and as latency spikes). A collection runs once this many
    # more container objects are alive than after the last one, and scans them all: a
    # service whose batches keep tens of thousands alive until the batch ends passes a
    # threshold above that, so a batch's objects are freed before any collection sees them.
    gc.freeze()
    gc.set_threshold(gc_young, 20, 20)
    config = uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        log_config=None,
        access_log=False,
        # nothing reads the client's address or scheme, and uvicorn's X-Forwarded-* middleware
        # costs every request (an address check against the trusted hosts, a header scan)
        proxy_headers=False,
        timeout_graceful_shutdown=10,
        # Idle keep-alive connections stay open longer than any Retry-After we send (5 s) and
        # than the usual load balancer idle timeout (60 s): a client that waits as told and
        # reuses its connection must not race the server closing it (uvicorn's default: 5 s).
        timeout_keep_alive=75,
        lifespan="on",
    )
    uvicorn.Server(config).run()
