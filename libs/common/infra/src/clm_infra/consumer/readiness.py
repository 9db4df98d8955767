"""What a readiness check says of a process's loops."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime

from clm_infra.consumer.loop import BatchConsumer
from clm_infra.stall import describe


def stalled_loops(loops: Mapping[str, BatchConsumer]) -> str | None:
    """What a readiness check says of the named loops with stalled partitions
    (``stalled: consumer 0 partition 3 (lag 120) since … (130 s)``), or None: none is."""
    now, wall = time.monotonic(), datetime.now(UTC)
    found = [(name, loops[name].stalls(now)) for name in sorted(loops)]
    said = [f"{name} {describe(stalls, now=now, wall=wall)}" for name, stalls in found if stalls]
    return "stalled: " + "; ".join(said) if said else None
