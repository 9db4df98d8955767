"""``clm``: the operator's command line (argparse, one module per command group).

    clm keys create --source shop-eu [--kind write|read] [--label …]   print a new key once
    clm keys list | clm keys revoke ID | clm keys seed-dev
    clm webhooks add --source shop-eu --provider shopify [--secret …]  store a signing secret
    clm webhooks list | clm webhooks revoke ID | clm webhooks new-key
    clm webhooks subscriptions | subscribe URL [--stages S | --segments IDS]
                  [--purpose marketing|service] | unsubscribe ID   outbound subscriptions
    clm customer show ID | clm stages | clm kpis --window 7d | clm status
    clm dlq list | clm dlq replay P:O [--fixed FILE] | clm replay --yes | clm migrate
    clm simulate [--customers N] [--seed S] [--csv FILE] [--out FILE] [--truth FILE] …
                                                  journeys (or transactions) to the ingest
    clm model fit --csv FILE [--calibration-end DATE] [--currency C] [--json]
                  [--predictions OUT.csv --horizon-weeks N]   fit P(alive) and CLV models
    clm segments list | show ID | create --file F | update ID --file F | delete ID
    clm segments members ID [--after C] | history ID [--from T --to T --bucket hour|day]
    clm privacy new-master-key | clm privacy status | clm privacy rotate [--batch N]

Each module in :mod:`clm_cli.commands` has ``register(sub)``, which adds its parser and sets
one of two defaults on every leaf command:

- ``handler(args, settings, conn)``: runs inside one Postgres transaction;
- ``action_fn(args, settings)``: runs on its own (HTTP calls, Kafka, files).

Refusals are :class:`~clm_cli.errors.CliError`: ``clm: error: …`` on stderr, status 1 or 2.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from clm_cli.errors import CliError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from clm_cli.settings import CliSettings
    from clm_infra.settings import CommonSettings

Handler = Callable[[argparse.Namespace, "CommonSettings", "AsyncConnection"], Awaitable[int]]
Action = Callable[[argparse.Namespace, "CliSettings"], Coroutine[Any, Any, int]]

# Command -> (module, one-line help). A module is imported only when its command runs (or
# for the whole tree, ``parser(ALL)``): ``clm --help`` and each command start without the
# libraries of the others (Kafka, SQLAlchemy, Alembic …), which take seconds to import.
COMMANDS: dict[str, tuple[str, str]] = {
    "keys": ("keys", "API keys: write keys (ingest), read tokens (read APIs)"),
    "webhooks": ("webhooks", "webhook signing secrets; outbound subscriptions"),
    "customer": ("customers", "one customer's stage, facts and history; erasure"),
    "stages": ("customers", "how many customers are in each stage"),
    "kpis": ("kpis", "lifecycle KPIs over a window"),
    "status": ("status", "services' health, consumer lag per partition, outbox, DLQ size"),
    "dlq": ("dlq", "the dead-letter topic: list, show, re-submit records"),
    "replay": ("replay", "rebuild every customer from the event log (after a rule change)"),
    "migrate": ("migrate", "upgrade the database schema to the newest revision, create topics"),
    "simulate": (
        "simulate",
        "simulated customer journeys (or a CSV of transactions) to the ingest",
    ),
    "model": ("model", "predictive models: P(alive), expected purchases, predicted CLV"),
    "segments": ("segments", "segments: define them, their members and history"),
    "privacy": ("privacy", "master keys of the customers' data keys: new key, status, rotation"),
}
ALL = "*"


def parser(command: str | None = ALL) -> argparse.ArgumentParser:
    """The command tree: ``command``'s parser in full (every one for ``ALL``), the rest as
    one-line entries for the listing."""
    root = argparse.ArgumentParser(prog="clm", description="CLM Stream operator commands")
    sub = root.add_subparsers(dest="group", required=True, metavar="COMMAND")
    wanted = COMMANDS if command == ALL else {k: v for k, v in COMMANDS.items() if k == command}
    for module in dict.fromkeys(m for m, _ in wanted.values()):
        importlib.import_module(f"clm_cli.commands.{module}").register(sub)
    for name, (_, summary) in COMMANDS.items():
        if name not in sub.choices:
            sub.add_parser(name, help=summary)
    return root


def _command_of(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


async def _in_transaction(handler: Handler, args: argparse.Namespace, s: CommonSettings) -> int:
    from clm_infra.db import create_engine  # only the commands that need Postgres load it

    engine = create_engine(s.database.url, pool_size=1, app_name="clm-cli")
    try:
        async with engine.begin() as conn:
            return await handler(args, s, conn)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser(_command_of(argv)).parse_args(argv)
    # client libraries log every failed connection attempt; the CLI says it once, in a sentence
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    handler: Handler | None = getattr(args, "handler", None)
    action: Action | None = getattr(args, "action_fn", None)
    from clm_cli.settings import CliSettings  # pydantic: not needed to print help

    settings = CliSettings()
    try:
        if action is not None:
            return asyncio.run(action(args, settings))
        assert handler is not None, "every leaf command sets handler or action_fn"
        return asyncio.run(_in_transaction(handler, args, settings))
    except CliError as exc:
        print(f"clm: error: {exc}", file=sys.stderr)
        return exc.status
    except OSError as exc:
        print(
            f"clm: error: cannot reach Postgres ({exc}) — start it or set CLM_DATABASE_URL",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
