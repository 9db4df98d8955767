"""Bearer-key authentication for the HTTP APIs, with a short in-memory cache."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from fastapi import Request
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_infra import keys
from clm_infra.db import unavailable
from clm_web.problem import ProblemError

log = logging.getLogger(__name__)

LOOKUPS = Counter(
    "clm_auth_key_lookups_total",
    "Keys looked up in Postgres (cache misses), by answer",
    ["found"],
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's kind and the source it speaks for."""

    kind: str
    source: str


class KeyVerifier:
    """Looks keys up in Postgres (by hash) and caches answers, good and bad, for ``ttl_s``;
    while Postgres is unavailable, an answer up to ``stale_s`` past its expiry is used.

    The cache is an LRU of ``max_entries``: a full cache forgets its least recently used
    answer, never all of them (a flood of unknown keys would otherwise flush every good key
    and cost each caller a lookup again). Unknown keys are cached too (``None``), so a key
    tried again costs no lookup; keys never seen before do, and the per-address limit on
    failed authentications (:mod:`clm_web.request_limits`) bounds how many of those one
    client gets. ``lookups`` counts the Postgres lookups made.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        ttl_s: float = 10.0,
        stale_s: float = 300.0,
        max_entries: int = 10_000,
    ):
        self._engine = engine
        self._ttl = ttl_s
        self._stale = stale_s
        self._max = max(1, max_entries)
        self._cache: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()
        self.lookups = 0

    def __len__(self) -> int:
        return len(self._cache)

    async def verify(self, key: str) -> Principal | None:
        now = time.monotonic()
        digest = keys.hash_key(key)
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(digest)
            return hit[1]
        try:
            self.lookups += 1
            async with self._engine.connect() as conn:
                found = await keys.lookup(conn, key)
        except Exception as exc:
            # Postgres away: an answer expired less than ``stale_s`` ago still stands, so the
            # callers seen recently keep working through a restart; anyone else gets a 503
            if hit is None or now > hit[0] + self._stale or not unavailable(exc):
                raise
            log.warning("Postgres unavailable: a key answered from the expired cache")
            return hit[1]
        LOOKUPS.labels("yes" if found is not None else "no").inc()
        principal = None if found is None else Principal(kind=found[0], source=found[1])
        self.remember(digest, now + self._ttl, principal)
        return principal

    def remember(self, digest: str, until: float, principal: Principal | None) -> None:
        """Cache an answer; the least recently used one makes room when full."""
        self._cache[digest] = (until, principal)
        self._cache.move_to_end(digest)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)


def bearer_token(request: Request) -> str:
    return bearer_from_header(request.headers.get("authorization", ""))


def bearer_from_header(header: str) -> str:
    """The key of an ``Authorization: Bearer <key>`` header's value, or a 401 problem."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ProblemError(
            401,
            "Unauthorized",
            "send the key as 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


async def authenticate(request: Request, verifier: KeyVerifier, kind: str) -> Principal:
    """The caller's principal, or a 401/403 problem: each endpoint takes one key kind
    (``write``: events only; ``read``: the read APIs; ``admin``: erasure, merges, webhook
    subscriptions), so a public browser write key can read or change nothing."""
    principal = await verifier.verify(bearer_token(request))
    if principal is None:
        raise ProblemError(
            401, "Unauthorized", "unknown or revoked key", headers={"WWW-Authenticate": "Bearer"}
        )
    if principal.kind != kind:
        raise ProblemError(403, "Forbidden", f"this endpoint needs {_article(kind)} {kind} key")
    return principal


def _article(kind: str) -> str:
    return "an" if kind[:1] in "aeiou" else "a"
