"""When a consumer loop counts as stalled: behind on a partition, and not moving.

A partition is stalled when records wait on it (lag > 0) and the loop has not made progress on
it for ``after_s`` seconds. Progress is an advance of its stored offset, its assignment, or
being seen caught up (lag 0): a partition idle for an hour that receives one record is not
stalled the moment it arrives. Pure: the caller passes the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True, slots=True)
class Progress:
    """A partition's lag and when the loop last made progress on it (monotonic seconds)."""

    lag: int
    at: float


@dataclass(frozen=True, slots=True)
class Stall:
    partition: int
    lag: int
    since: float  # monotonic: the last progress


def stalled(partitions: Mapping[int, Progress], *, now: float, after_s: float) -> list[Stall]:
    """The partitions behind that made no progress for ``after_s`` seconds, by partition."""
    return [
        Stall(partition, p.lag, p.at)
        for partition, p in sorted(partitions.items())
        if p.lag > 0 and now - p.at >= after_s
    ]


def describe(stalls: list[Stall], *, now: float, wall: datetime) -> str:
    """What a readiness check says of them: ``partition 3 (lag 120) since
    2026-12-07T12:00:00Z (130 s)``; ``wall`` is the wall-clock time at ``now``."""
    parts = []
    for s in stalls:
        waited = max(0.0, now - s.since)
        since = (wall.astimezone(UTC) - timedelta(seconds=waited)).strftime("%Y-%m-%dT%H:%M:%SZ")
        parts.append(f"partition {s.partition} (lag {s.lag}) since {since} ({waited:.0f} s)")
    return ", ".join(parts)
