"""``python -m clm_stage_engine.replay --yes``: rebuild every customer from the retained log.

The same as ``clm replay --yes`` (see :mod:`clm_common.replay`), with the stage engine's own
settings for the group and topic.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from clm_common import replay
from clm_common.db import create_engine
from clm_common.kafka import log_ends
from clm_stage_engine.settings import StageEngineSettings


async def reset_for_replay(
    engine: AsyncEngine, group_id: str, topic: str, *, bootstrap: str
) -> int:
    ends = await log_ends(bootstrap, topic)
    async with engine.begin() as conn:
        return await replay.reset_for_replay(conn, group_id, topic, ends)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clm_stage_engine.replay")
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
                engine,
                settings.stage_engine_group,
                settings.topic_events,
                bootstrap=settings.kafka_bootstrap,
            )
        finally:
            await engine.dispose()

    partitions = asyncio.run(run())
    print(f"replay: cleared; {partitions} partition offsets reset to 0; engines rebuild now")
    return 0


if __name__ == "__main__":
    sys.exit(main())
