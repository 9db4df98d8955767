"""The loop's commit policy, frozen: how batches are cut, retried, limited and watched.

One value per loop, given when it is built and never changed while it runs (arroyo's
``CommitPolicy``): what a loop does is read off this and nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_records: int = 500
    max_wait_s: float = 0.2
    retry_backoff_s: float = 1.0
    max_consecutive_poison: int = 1000
    idle_recheck_s: float = 5.0
    hint_interval_s: float = 1.0
    fill_s: float = 0.0  # once a batch has records, wait up to this long for more
    # statements run once on the loop's connection (its session settings)
    session: tuple[str, ...] = ()
    # awaited before each fetch: what the batches feed (the stage engine's outbox relay)
    # holds the loop here until it has caught up, so it never falls behind without bound
    gate: Callable[[], Awaitable[None]] | None = None
    # a partition with lag whose offset has not advanced for this long is stalled (None: never)
    stall_s: float | None = None
