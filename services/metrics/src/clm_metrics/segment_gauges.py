"""The segments' Prometheus series, read from the database into memory every
``CLM_METRICS_SEGMENT_REFRESH_S``.

A custom collector serves the last read: a scrape never queries, and a segment deleted or
renamed since leaves the labels with the next read (the collector yields what was read, with
no label set kept from before). Series (label ``segment``: the segment's name):

- ``clm_segment_members{segment}`` (gauge): the segment's members now (its open spans);
- ``clm_segment_entries_total{segment}``, ``clm_segment_exits_total{segment}`` (counters):
  every span entered / left so far. Spans are never removed, so the totals only grow;
- ``clm_segments_unlabelled`` (gauge): the segments not deleted that have no label because
  ``CLM_SEGMENTS_MAX_ACTIVE`` of them (the oldest) already do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_metrics.repository import segment_reads
from clm_metrics.segment_kpis import Labelled, bounded

log = logging.getLogger(__name__)

MEMBERS = ("clm_segment_members", "Customers in the segment now")
ENTRIES = ("clm_segment_entries_total", "Entries into the segment so far (membership spans)")
EXITS = ("clm_segment_exits_total", "Exits from the segment so far (membership spans closed)")
UNLABELLED = (
    "clm_segments_unlabelled",
    "Segments not deleted left out of the segment series (beyond CLM_SEGMENTS_MAX_ACTIVE)",
)


class SegmentCollector(Collector):
    """Yields the segment series of the last read (none before the first one)."""

    def __init__(self) -> None:
        self.labelled: Labelled | None = None

    def describe(self) -> Iterator[Metric]:
        return self._families(None)

    def collect(self) -> Iterator[Metric]:
        return self._families(self.labelled)

    @staticmethod
    def _families(labelled: Labelled | None) -> Iterator[Metric]:
        members = GaugeMetricFamily(*MEMBERS, labels=["segment"])
        entries = CounterMetricFamily(*ENTRIES, labels=["segment"])
        exits = CounterMetricFamily(*EXITS, labels=["segment"])
        unlabelled = GaugeMetricFamily(*UNLABELLED)
        if labelled is not None:
            for segment in labelled.segments:
                members.add_metric([segment.name], segment.members)
                entries.add_metric([segment.name], segment.entries)
                exits.add_metric([segment.name], segment.exits)
            unlabelled.add_metric([], labelled.unlabelled)
        yield from (members, entries, exits, unlabelled)


COLLECTOR = SegmentCollector()
REGISTRY.register(COLLECTOR)


async def refresh_segments(engine: AsyncEngine, bound: int) -> Labelled:
    """Read the segments' figures (one statement) and serve them from now on."""
    async with engine.connect() as conn:
        kept, live = await segment_reads.totals(conn, bound)
    COLLECTOR.labelled = bounded(kept, live, bound)
    return COLLECTOR.labelled


async def refresh_segments_forever(engine: AsyncEngine, bound: int, every_s: float) -> None:
    """Every ``every_s``: read the segments' figures; a failed read leaves the last ones."""
    while True:
        try:
            await refresh_segments(engine, bound)
        except Exception:
            log.warning("segment gauge refresh failed", exc_info=True)
        await asyncio.sleep(every_s)
