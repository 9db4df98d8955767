"""A request id on every log line and response, and a log line for every refused request
(429s: one a second, with how many more there were).

Request counts and durations by route and status are the shared ``clm_http_requests_total``
and ``clm_http_request_duration_seconds`` (:func:`clm_web.prom.instrument`).

The id comes from the caller's ``X-Request-ID`` (when it is a short, plain token) or is made
here; it is echoed in the response and added to every log record made while the request runs
(``request_id`` in the JSON logs). Route labels are path templates, never raw paths.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clm_web.asgi import header

log = logging.getLogger("clm_ingest.access")

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "clm_request_id", default=None
)
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_installed = False


def install_request_id_logging() -> None:
    """Every log record made while a request runs carries its ``request_id`` (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    factory = logging.getLogRecordFactory()

    def with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        rid = REQUEST_ID.get()
        if rid is not None:
            record.request_id = rid
        return record

    logging.setLogRecordFactory(with_request_id)


class OncePerSecond:
    """Lets one event a second through and counts the others (a flood of 429s is one log line
    a second saying how many more there were, not a line each)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._second = -1
        self._suppressed = 0

    def first_this_second(self) -> bool:
        second = int(self._clock())
        if second != self._second:
            self._second = second
            return True
        self._suppressed += 1
        return False

    def take_suppressed(self) -> int:
        """How many were held back since the last one let through."""
        n, self._suppressed = self._suppressed, 0
        return n


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._throttled = OncePerSecond()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = (header(scope, b"x-request-id") or b"").decode("latin-1")
        rid = given if _ID.match(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(rid)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            if status >= 400 and (status != 429 or self._throttled.first_this_second()):
                extra: dict[str, Any] = {
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                }
                if status == 429:
                    extra["also_refused_429"] = self._throttled.take_suppressed()
                log.info("request refused", extra=extra)
            REQUEST_ID.reset(token)
