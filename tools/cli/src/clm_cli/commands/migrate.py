"""``clm migrate``: the database schema to the newest revision, then the Kafka topics.

Alembic owns the schema (``alembic.ini`` and ``migrations/`` at the repository root, or in
the stage-engine image's working directory); the topics come from the shared settings. Both
steps are idempotent: run it before every start of a new version.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, ProgrammingError

from clm_cli.errors import CliError
from clm_cli.settings import CliSettings
from clm_infra.db import create_engine
from clm_infra.kafka import ensure_topics


def alembic_config(path: str) -> Config:
    ini = Path(path)
    if not ini.is_file():
        raise CliError(
            f"no {ini} — run clm migrate from the repository root (or the stage-engine "
            "image's /app), or pass --config PATH/alembic.ini",
            2,
        )
    return Config(str(ini))


async def current_revision(settings: CliSettings) -> str | None:
    engine = create_engine(settings.database.url, pool_size=1, app_name="clm-cli")
    try:
        async with engine.connect() as conn:
            try:
                return (
                    await conn.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar()
            except ProgrammingError:  # no alembic_version table: an empty database
                return None
    finally:
        await engine.dispose()


async def _migrate(args: argparse.Namespace, settings: CliSettings) -> int:
    config = alembic_config(args.config)
    head = ScriptDirectory.from_config(config).get_current_head()
    try:
        before = await current_revision(settings)
    except (OSError, DBAPIError) as exc:
        raise CliError(
            f"cannot reach Postgres ({exc}) — start it or set CLM_DATABASE_URL", 2
        ) from exc
    if args.status:
        state = "up to date" if before == head else "behind: run clm migrate"
        print(f"schema: {before or '(empty)'}; newest: {head} ({state})")
        return 0 if before == head else 1
    if before != head:
        # env.py runs its own event loop: give Alembic a thread of its own
        await asyncio.to_thread(command.upgrade, config, "head")
        print(f"schema: {before or '(empty)'} -> {head}")
    else:
        print(f"schema: {head} (up to date)")
    if args.skip_topics:
        return 0
    try:
        created = await ensure_topics(settings)
    except Exception as exc:
        raise CliError(
            f"cannot create the topics at {settings.kafka.bootstrap} ({exc!r}) — start Kafka "
            "or set CLM_KAFKA_BOOTSTRAP",
            2,
        ) from exc
    print("topics: " + (f"created {', '.join(created)}" if created else "all present"))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "migrate", help="upgrade the database schema to the newest revision and create topics"
    )
    cmd.add_argument(
        "--config",
        default=os.environ.get("CLM_ALEMBIC_CONFIG", "alembic.ini"),
        help="Alembic's ini file (default: ./alembic.ini or CLM_ALEMBIC_CONFIG)",
    )
    cmd.add_argument("--status", action="store_true", help="only say whether the schema is current")
    cmd.add_argument("--skip-topics", action="store_true", help="the schema only, not Kafka")
    cmd.set_defaults(action_fn=_migrate)
