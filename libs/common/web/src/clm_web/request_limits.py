"""Request limits in front of every HTTP API: per key, per client address, and per address
on refused keys (an ASGI middleware; the buckets are :class:`clm_web.ratelimit.TokenBuckets`).

- Per key: the ``Authorization`` header's value (hashed: the raw key is not kept), so one
  key's flood answers 429 to that key only, and other keys are unaffected.
- Per client address (``scope["client"]``: behind a proxy, run the server with its proxy
  headers on so that this is the real client): bounds a client whatever keys it presents,
  and the requests without a key (providers' signed webhooks, health aside).
- Refused keys: each 401 answered spends one token of the address's failed-auth bucket; an
  address whose bucket is empty gets 429 before its key is even looked up, so a flood of
  random keys costs no Postgres lookup past its small burst.

A refusal is 429 with ``Retry-After`` (whole seconds), as problem+json unless the service
words its refusals otherwise (the ingest's Segment routes). Health probes are not limited.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

from fastapi import FastAPI
from prometheus_client import Counter
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clm_infra.settings import CommonSettings
from clm_web.asgi import header
from clm_web.problem import problem_response
from clm_web.ratelimit import TokenBuckets, retry_after_header

REFUSED = Counter(
    "clm_http_rate_limited_total", "Requests refused by a request limit (429)", ["limit"]
)

#: Not limited: the orchestrator's probes.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/livez"})

#: (path, status, code, title, detail, headers) -> the response.
Refuse = Callable[[str, int, str, str, str, Mapping[str, str]], Response]


def problem_refusal(
    path: str, status: int, code: str, title: str, detail: str, headers: Mapping[str, str]
) -> Response:
    return problem_response(status, title, detail, headers=headers, instance=path)


class RequestLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        per_key: TokenBuckets | None,
        per_address: TokenBuckets | None,
        failed_auth: TokenBuckets | None,
        refuse: Refuse = problem_refusal,
    ) -> None:
        self.app = app
        self.per_key = per_key
        self.per_address = per_address
        self.failed_auth = failed_auth
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = str(client[0]) if client else "unknown"
        if self.failed_auth is not None and (wait := self.failed_auth.wait(address)) > 0:
            await self._refuse(scope, receive, send, "failed_auth", wait, "refused keys")
            return
        if self.per_address is not None and (wait := self.per_address.take(address)) > 0:
            await self._refuse(scope, receive, send, "address", wait, "requests of this address")
            return
        authorization = header(scope, b"authorization")
        if self.per_key is not None and authorization:
            key = hashlib.sha256(authorization).hexdigest()[:32]
            if (wait := self.per_key.take(key)) > 0:
                await self._refuse(scope, receive, send, "key", wait, "requests of this key")
                return
        if self.failed_auth is None:
            await self.app(scope, receive, send)
            return
        failed_auth = self.failed_auth

        async def watching(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                failed_auth.take(address)
            await send(message)

        await self.app(scope, receive, watching)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, limit: str, wait: float, what: str
    ) -> None:
        REFUSED.labels(limit).inc()
        retry = retry_after_header(wait)
        response = self.refuse(
            scope["path"],
            429,
            "rate_limited",
            "Too Many Requests",
            f"rate limit of {what}; retry after {retry}s",
            {"Retry-After": retry},
        )
        await response(scope, receive, send)


def buckets(rate: float, burst: int) -> TokenBuckets | None:
    return TokenBuckets(rate=rate, burst=burst) if rate > 0 else None


def install_request_limits(
    app: FastAPI, settings: CommonSettings, refuse: Refuse = problem_refusal
) -> None:
    """The limits of ``settings`` (``CLM_RATE_LIMIT_*``) in front of ``app``'s routes."""
    app.add_middleware(
        RequestLimitMiddleware,
        per_key=buckets(settings.limits.key_per_s, settings.limits.key_burst),
        per_address=buckets(settings.limits.address_per_s, settings.limits.address_burst),
        failed_auth=buckets(settings.limits.failed_auth_per_s, settings.limits.failed_auth_burst),
        refuse=refuse,
    )
