"""Per-key rate limit: a token bucket per write key, refilled continuously (pure, clock given).

Each key may send ``rate`` events a second on average and ``burst`` at once; a request costs
as many tokens as it carries events. A refused request learns how long to wait (``Retry-After``).
The buckets live in this process: behind N ingest replicas a key gets N times the rate.
"""

from __future__ import annotations

import math
import time
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
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str, cost: float = 1.0) -> float:
        """0 when ``cost`` tokens were taken; else the seconds until they will be there."""
        now = self._clock()
        tokens, at = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        need = min(cost, self._burst)  # a request bigger than the burst waits for a full bucket
        if tokens >= need:
            if len(self._buckets) >= self._max_keys and key not in self._buckets:
                self._buckets.clear()
            self._buckets[key] = (tokens - need, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (need - tokens) / self._rate


def retry_after_header(wait_s: float) -> str:
    """Whole seconds, at least 1 (Retry-After has no fractions)."""
    return str(max(1, math.ceil(wait_s)))
