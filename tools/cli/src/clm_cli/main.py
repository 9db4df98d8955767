"""``clm``: the operator's command line (argparse, one module per command group).

    clm keys create --source shop-eu [--kind write|read] [--label …]   print a new key once
    clm keys list | clm keys revoke ID | clm keys seed-dev
    clm webhooks add --source shop-eu --provider shopify [--secret …]  store a signing secret
    clm webhooks list | clm webhooks revoke ID | clm webhooks new-key
    clm replay --yes [--group clm-stage-engine]   rebuild every customer from the event log
    clm simulate [--customers N] [--seed S] [--csv FILE] [--out FILE] [--truth FILE] …
                                                  journeys (or transactions) to the ingest

Each module in :mod:`clm_cli.commands` has ``register(sub)``, which adds its parser and sets
one of two defaults on every leaf command:

- ``handler(args, settings, conn)``: runs inside one Postgres transaction;
- ``action(args, settings)``: runs on its own (HTTP calls, Kafka, files).

Refusals are :class:`~clm_cli.errors.CliError`: ``clm: error: …`` on stderr, status 1 or 2.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from clm_cli.commands import keys, replay, simulate, webhooks
from clm_cli.errors import CliError
from clm_common import webhook_secrets
from clm_common.db import create_engine
from clm_common.settings import CommonSettings

Handler = Callable[[argparse.Namespace, CommonSettings, AsyncConnection], Awaitable[int]]
Action = Callable[[argparse.Namespace, CommonSettings], Coroutine[Any, Any, int]]

GROUPS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    keys.register,
    webhooks.register,
    replay.register,
    simulate.register,
]


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="clm", description="CLM Stream operator commands")
    sub = root.add_subparsers(dest="group", required=True, metavar="COMMAND")
    for add_group in GROUPS:
        add_group(sub)
    return root


async def _in_transaction(handler: Handler, args: argparse.Namespace, s: CommonSettings) -> int:
    engine = create_engine(s.database_url, pool_size=1, app_name="clm-cli")
    try:
        async with engine.begin() as conn:
            return await handler(args, s, conn)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    action: Action | None = getattr(args, "action_fn", None)
    settings = CommonSettings()
    try:
        if action is not None:
            return asyncio.run(action(args, settings))
        assert handler is not None, "every leaf command sets handler or action_fn"
        return asyncio.run(_in_transaction(handler, args, settings))
    except CliError as exc:
        print(f"clm: error: {exc}", file=sys.stderr)
        return exc.status
    except webhook_secrets.SecretsKeyMissing as exc:
        print(f"clm: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"clm: error: cannot reach Postgres ({exc}) — start it or set CLM_DATABASE_URL",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
