"""Token buckets per key (an API key's hash, a client address), refilled continuously (pure,
clock given).

Each key may spend ``rate`` tokens a second on average and ``burst`` at once; a request costs
what the caller says (the ingest: the events it carries; elsewhere: one). A refused request
learns how long to wait (``Retry-After``). The table of buckets is an LRU of ``max_keys``: a
full table forgets the bucket used least recently, never all of them (a flood of new keys
would otherwise refill every bucket, the flooder's own included). The buckets live in this
process: behind N replicas a key gets N times the rate.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBuckets:
    def __init__(
        self,
        *,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._max_keys = max(1, max_keys)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self._burst, now))
        return min(self._burst, tokens + (now - at) * self._rate)

    def take(self, key: str, cost: float = 1.0) -> float:
        """0 when ``cost`` tokens were taken; else the seconds until they will be there."""
        now = self._clock()
        tokens = self._tokens(key, now)
        need = min(cost, self._burst)  # a request bigger than the burst waits for a full bucket
        if tokens >= need:
            self._store(key, tokens - need, now)
            return 0.0
        self._store(key, tokens, now)
        return (need - tokens) / self._rate

    def wait(self, key: str, cost: float = 1.0) -> float:
        """What :meth:`take` would answer, taking nothing."""
        tokens = self._tokens(key, self._clock())
        need = min(cost, self._burst)
        return 0.0 if tokens >= need else (need - tokens) / self._rate

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)


def retry_after_header(wait_s: float) -> str:
    """Whole seconds, at least 1 (Retry-After has no fractions)."""
    return str(max(1, math.ceil(wait_s)))
