"""Rebuild every customer from the retained event log (after a rule change).

``python -m clm_stage_engine.replay --yes`` clears what the stage engine derived (customers,
history, event log, identity links, dedupe rows, unpublished outbox rows) and resets its stored
offsets to the start of the events topic, in one transaction. Running stage engines notice
(their next offset compare-and-set fails, or their idle re-check sees the reset), seek to the
start and re-apply the whole log with the current rules. Erasures are kept: an erased
customer's events stay dropped. Lifecycle records are re-published with their stable
``record_id``s, so the metrics service does not count them twice.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_common.db import create_engine
from clm_common.schema import consumer_offsets
from clm_stage_engine.settings import StageEngineSettings

DERIVED = (
    "customers",
    "stage_transitions",
    "customer_events",
    "identity_links",
    "processed_events",
    "outbox",
)


async def reset_for_replay(engine: AsyncEngine, group_id: str, topic: str) -> int:
    """Clear the derived tables and point the group's stored offsets at 0; return partitions."""
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {', '.join(DERIVED)}"))
        result = await conn.execute(
            update(consumer_offsets)
            .where(consumer_offsets.c.group_id == group_id, consumer_offsets.c.topic == topic)
            .values(next_offset=0)
        )
    return int(result.rowcount)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clm_stage_engine.replay", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--yes", action="store_true", help="really clear and rebuild")
    args = parser.parse_args(argv)
    if not args.yes:
        print("replay: this clears every derived customer row; run again with --yes")
        return 1
    settings = StageEngineSettings()

    async def run() -> int:
        engine = create_engine(settings.database_url, pool_size=1, app_name="clm-replay")
        try:
            return await reset_for_replay(
                engine, settings.stage_engine_group, settings.topic_events
            )
        finally:
            await engine.dispose()

    partitions = asyncio.run(run())
    print(f"replay: cleared; {partitions} partition offsets reset to 0; engines rebuild now")
    return 0


if __name__ == "__main__":
    sys.exit(main())
