"""Resetting the stage engine's derived state so the engines rebuild it from the event log.

Clears what the stage engine derived (customers, history, event log, identity links, dedupe
rows, unpublished outbox rows, consent) and resets the group's stored offsets on the events
topic to 0, in one transaction. Running engines notice (their next offset compare-and-set
fails, or their idle re-check sees the reset), seek to the start and re-apply the whole log
with the current rules. The log's end at reset time is stored as the replay's target: until
the stored offsets reach it, the sweeper moves nobody, so inactivity moves never act on a
half-rebuilt history.
Erasures are kept, so an erased customer's events stay dropped. Segment memberships are kept
and paused (:func:`pause_segments`): a backfill re-evaluates them once the replay is done.
Lifecycle records are re-published with their stable ``record_id``s: the metrics service does
not count them twice.

A replay that changes customers' pasts (new rules) is followed by the metrics only when they
are rebuilt with it (:func:`reset_metrics`, ``clm replay --with-metrics``, the metrics service
stopped): in the same transaction, holding the outbox relay's lock so no record is in flight,
the metrics tables are emptied and the metrics group's offsets on the lifecycle stream point
at its end, so the metrics count exactly the records the replay publishes.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import and_, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_infra.schema import consumer_offsets, replay_targets
from clm_infra.segment_schema import CATALOG_LOCK, segment_catalog, segments

#: The advisory lock the outbox relay holds while it publishes (one relay at a time).
RELAY_LOCK_ID = 0x434C4D01  # "CLM" + 1

#: What the metrics service derives from the lifecycle stream (emptied by a metrics rebuild).
METRICS_DERIVED = (
    "kpi_buckets",
    "kpi_rollups",
    "kpi_distinct",
    "metrics_customer_numbers",
    "metrics_customer_days",
    "kpi_cohorts",
    "metrics_cohort_activity",
    "metrics_tickets",
    "metrics_processed",
    "stage_counts",
    "kpi_day_versions",
    "kpi_hour_versions",
)

DERIVED = (
    "customers",
    "stage_transitions",
    "customer_events",
    "identity_links",
    "processed_events",
    "outbox",
    "outbox_batches",
    "customer_consent",
)


async def reset_for_replay(
    conn: AsyncConnection, group_id: str, topic: str, log_ends: Mapping[int, int]
) -> int:
    """Clear the derived tables, point the group's stored offsets at 0 and record the log's end
    per partition (``log_ends``) as the replay's target; return the partitions reset."""
    await conn.execute(text(f"TRUNCATE {', '.join(DERIVED)}"))
    await pause_segments(conn)
    await conn.execute(delete(replay_targets).where(replay_targets.c.group_id == group_id))
    targets = [
        {"group_id": group_id, "topic": topic, "partition": p, "end_offset": end}
        for p, end in sorted(log_ends.items())
        if end > 0
    ]
    if targets:
        await conn.execute(insert(replay_targets), targets)
    result = await conn.execute(
        update(consumer_offsets)
        .where(consumer_offsets.c.group_id == group_id, consumer_offsets.c.topic == topic)
        .values(next_offset=0)
    )
    return int(result.rowcount)


async def pause_segments(conn: AsyncConnection) -> None:
    """Segment memberships are kept through a replay: the writers leave them alone while it
    runs (a customer rebuilt from part of its events would enter and leave segments for
    nothing), and once it is done a backfill of every segment re-evaluates the rebuilt
    customers against them (only real differences change a span). The catalog's lock is
    taken exclusive: every writer after this reads the pause."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": CATALOG_LOCK})
    await conn.execute(
        update(segment_catalog)
        .where(segment_catalog.c.id == 1)
        .values(paused=True, version=segment_catalog.c.version + 1)
    )
    await conn.execute(
        update(segments)
        .where(segments.c.deleted_at.is_(None))
        .values(
            backfill_version=segments.c.version,
            backfill_after=None,
            backfill_done=0,
            backfill_total=None,
            backfill_started_at=None,
            backfill_finished_at=None,
        )
    )


async def replay_behind(conn: AsyncConnection, group_id: str) -> int:
    """How many records the group still has to re-apply before its replay is done (0: done,
    and the targets are cleared)."""
    stored = func.coalesce(consumer_offsets.c.next_offset, 0)
    behind = (
        await conn.execute(
            select(func.coalesce(func.sum(replay_targets.c.end_offset - stored), 0))
            .select_from(
                replay_targets.outerjoin(
                    consumer_offsets,
                    and_(
                        consumer_offsets.c.group_id == replay_targets.c.group_id,
                        consumer_offsets.c.topic == replay_targets.c.topic,
                        consumer_offsets.c.partition == replay_targets.c.partition,
                    ),
                )
            )
            .where(replay_targets.c.group_id == group_id, stored < replay_targets.c.end_offset)
        )
    ).scalar_one()
    if not behind:
        await conn.execute(delete(replay_targets).where(replay_targets.c.group_id == group_id))
    return int(behind)


async def hold_relay(conn: AsyncConnection) -> None:
    """Wait for a publishing relay to finish and keep every relay from publishing until this
    transaction ends (the relay's own transaction-scoped lock)."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": RELAY_LOCK_ID})


async def reset_metrics(
    conn: AsyncConnection, group_id: str, topic: str, log_ends: Mapping[int, int]
) -> None:
    """Empty the metrics tables and point the metrics group at the lifecycle stream's end
    (``log_ends``, read while holding the relay: every record before it is of the old state)."""
    await conn.execute(text(f"TRUNCATE {', '.join(METRICS_DERIVED)}"))
    await conn.execute(
        delete(consumer_offsets).where(
            consumer_offsets.c.group_id == group_id, consumer_offsets.c.topic == topic
        )
    )
    rows = [
        {"group_id": group_id, "topic": topic, "partition": p, "next_offset": end}
        for p, end in sorted(log_ends.items())
    ]
    if rows:
        await conn.execute(insert(consumer_offsets), rows)
