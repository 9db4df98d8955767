"""``clm replay``: rebuild every customer from the retained event log."""

from __future__ import annotations

import argparse
import os

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_cli.errors import CliError
from clm_cli.settings import CliSettings
from clm_infra import replay
from clm_infra.kafka import log_ends
from clm_infra.settings import CommonSettings


async def _replay(args: argparse.Namespace, settings: CommonSettings, conn: AsyncConnection) -> int:
    if not args.yes:
        raise CliError("this clears every derived customer row; run again with --yes")
    ends = await _log_end(settings, settings.topics.events)
    if args.with_metrics:
        await _metrics_stopped(settings)
        await replay.hold_relay(conn)  # no lifecycle record in flight from here to the commit
        lifecycle_ends = await _log_end(settings, settings.topics.lifecycle)
        await replay.reset_metrics(
            conn, args.metrics_group, settings.topics.lifecycle, lifecycle_ends
        )
        print(
            f"replay: metrics emptied; {args.metrics_group} starts at the lifecycle stream's "
            "end (start the metrics service again)"
        )
    partitions = await replay.reset_for_replay(conn, args.group, settings.topics.events, ends)
    print(f"replay: cleared; {partitions} partition offsets of {args.group} reset to 0")
    print("running stage engines rebuild every customer now (see /readyz and consumer lag)")
    return 0


async def _log_end(settings: CommonSettings, topic: str) -> dict[int, int]:
    """Each partition's end offset of ``topic`` (nothing is cleared when Kafka cannot say)."""
    try:
        return await log_ends(settings.kafka, topic)
    except Exception as exc:
        raise CliError(
            f"cannot read the end of {topic} at {settings.kafka.bootstrap} "
            f"({type(exc).__name__}) — start Kafka or set CLM_KAFKA_BOOTSTRAP; nothing was "
            "cleared",
            2,
        ) from exc


async def _metrics_stopped(settings: CommonSettings) -> None:
    """Refuse while a metrics service answers: its caches would outlive the emptied tables."""
    url = CliSettings().metrics().url
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            await client.get(f"{url}/healthz")
    except httpx.TransportError:
        return
    raise CliError(
        f"a metrics service answers at {url}: stop every metrics replica first (a running one "
        "keeps what it counted in memory); nothing was cleared",
        2,
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "replay", help="rebuild every customer from the retained event log (after a rule change)"
    )
    cmd.add_argument("--yes", action="store_true", help="really clear and rebuild")
    cmd.add_argument(
        "--group",
        default=os.environ.get("CLM_STAGE_ENGINE_GROUP", "clm-stage-engine"),
        help="the stage engine's consumer group (default: CLM_STAGE_ENGINE_GROUP)",
    )
    cmd.add_argument(
        "--with-metrics",
        action="store_true",
        help="rebuild the metrics too (stop the metrics service first): after a rule change",
    )
    cmd.add_argument(
        "--metrics-group",
        default=os.environ.get("CLM_METRICS_GROUP", "clm-metrics"),
        help="the metrics service's consumer group (default: CLM_METRICS_GROUP)",
    )
    cmd.set_defaults(handler=_replay)
