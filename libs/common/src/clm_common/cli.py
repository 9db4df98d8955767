"""``clm``: the operator's command line (argparse, one sub-command group per concern).

    clm keys create --source shop-eu [--kind write|read] [--label …]   print a new key once
    clm keys list | clm keys revoke ID | clm keys seed-dev
    clm webhooks add --source shop-eu --provider shopify [--secret …]  store a signing secret
    clm webhooks list | clm webhooks revoke ID | clm webhooks new-key
    clm replay --yes [--group clm-stage-engine]   rebuild every customer from the event log

A group is a function that adds its parser and sets ``handler`` on it; a later group (say,
``clm replay``) is one more entry in :data:`GROUPS`. Handlers run in one Postgres transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncConnection

from clm_common import keys, replay, webhook_secrets
from clm_common.db import create_engine
from clm_common.settings import CommonSettings

Handler = Callable[[argparse.Namespace, CommonSettings, AsyncConnection], Awaitable[int]]


class CliError(Exception):
    """A refusal the operator can act on (exit status 1 or 2)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# --- clm keys ---------------------------------------------------------------------------------


async def _keys_create(args: argparse.Namespace, _: CommonSettings, conn: AsyncConnection) -> int:
    key = keys.new_key(args.kind)
    await keys.store_key(conn, key=key, kind=args.kind, source=args.source, label=args.label)
    print(key)
    return 0


async def _keys_list(_: argparse.Namespace, __: CommonSettings, conn: AsyncConnection) -> int:
    for row in await keys.list_keys(conn):
        state = "revoked" if row.revoked_at else "active"
        print(f"{row.id}\t{row.kind}\t{row.source}\t{state}\t{row.label}")
    return 0


async def _keys_revoke(args: argparse.Namespace, _: CommonSettings, conn: AsyncConnection) -> int:
    if not await keys.revoke(conn, args.id):
        raise CliError(f"no active key with id {args.id}")
    print(f"revoked key {args.id}")
    return 0


async def _keys_seed_dev(
    _: argparse.Namespace, settings: CommonSettings, conn: AsyncConnection
) -> int:
    if settings.env != "dev":
        raise CliError("seed-dev needs CLM_ENV=dev", 2)
    await keys.store_key(conn, key=settings.dev_write_key, kind="write", source="dev", label="dev")
    await keys.store_key(conn, key=settings.dev_read_token, kind="read", source="dev", label="dev")
    print("dev keys seeded (source 'dev')")
    return 0


def keys_group(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("keys", help="API keys: write keys (ingest), read tokens (read APIs)")
    cmds = group.add_subparsers(dest="action", required=True)
    create = cmds.add_parser("create", help="create a key and print it once")
    create.add_argument("--source", required=True, help="the site or shop this key speaks for")
    create.add_argument("--kind", choices=["write", "read"], default="write")
    create.add_argument("--label", default="")
    create.set_defaults(handler=_keys_create)
    cmds.add_parser("list", help="list keys (never their secrets)").set_defaults(handler=_keys_list)
    revoke = cmds.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id", type=int)
    revoke.set_defaults(handler=_keys_revoke)
    cmds.add_parser(
        "seed-dev", help="store CLM_DEV_WRITE_KEY and CLM_DEV_READ_TOKEN (dev only)"
    ).set_defaults(handler=_keys_seed_dev)


# --- clm webhooks -----------------------------------------------------------------------------


async def _webhooks_add(
    args: argparse.Namespace, settings: CommonSettings, conn: AsyncConnection
) -> int:
    box = webhook_secrets.cipher(settings)
    secret = args.secret or webhook_secrets.new_secret()
    secret_id = await webhook_secrets.store_secret(
        conn, box, source=args.source, provider=args.provider, secret=secret, label=args.label
    )
    print(f"{secret_id}\t{secret}" if not args.secret else f"{secret_id}")
    return 0


async def _webhooks_list(_: argparse.Namespace, __: CommonSettings, conn: AsyncConnection) -> int:
    for row in await webhook_secrets.list_secrets(conn):
        state = "revoked" if row.revoked_at else "active"
        print(f"{row.id}\t{row.provider}\t{row.source}\t{state}\t{row.label}")
    return 0


async def _webhooks_revoke(
    args: argparse.Namespace, _: CommonSettings, conn: AsyncConnection
) -> int:
    if not await webhook_secrets.revoke_secret(conn, args.id):
        raise CliError(f"no active webhook secret with id {args.id}")
    print(f"revoked webhook secret {args.id}")
    return 0


def webhooks_group(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("webhooks", help="webhook signing secrets per source and provider")
    cmds = group.add_subparsers(dest="action", required=True)
    add = cmds.add_parser(
        "add",
        help="store a signing secret (the provider's, e.g. Stripe's whsec_…; or a new one, "
        "printed once, for the generic webhook)",
    )
    add.add_argument("--source", required=True, help="the source its events are recorded for")
    add.add_argument("--provider", required=True, choices=webhook_secrets.PROVIDERS)
    add.add_argument("--secret", help="the provider's secret (default: generate one)")
    add.add_argument("--label", default="")
    add.set_defaults(handler=_webhooks_add)
    cmds.add_parser("list", help="list webhook secrets (never the secrets)").set_defaults(
        handler=_webhooks_list
    )
    revoke = cmds.add_parser("revoke", help="revoke a webhook secret by id")
    revoke.add_argument("id", type=int)
    revoke.set_defaults(handler=_webhooks_revoke)
    cmds.add_parser(
        "new-key", help="print a new CLM_SECRETS_KEY (encrypts the secrets; no database)"
    ).set_defaults(handler=None)


# --- clm replay ---------------------------------------------------------------------------------


async def _replay(args: argparse.Namespace, settings: CommonSettings, conn: AsyncConnection) -> int:
    if not args.yes:
        raise CliError("this clears every derived customer row; run again with --yes")
    partitions = await replay.reset_for_replay(conn, args.group, settings.topic_events)
    print(f"replay: cleared; {partitions} partition offsets of {args.group} reset to 0")
    print("running stage engines rebuild every customer now (see /readyz and consumer lag)")
    return 0


def replay_group(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "replay", help="rebuild every customer from the retained event log (after a rule change)"
    )
    cmd.add_argument("--yes", action="store_true", help="really clear and rebuild")
    cmd.add_argument(
        "--group",
        default=os.environ.get("CLM_STAGE_ENGINE_GROUP", "clm-stage-engine"),
        help="the stage engine's consumer group (default: CLM_STAGE_ENGINE_GROUP)",
    )
    cmd.set_defaults(handler=_replay)


GROUPS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    keys_group,
    webhooks_group,
    replay_group,
]


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="clm", description="CLM Stream operator commands")
    sub = root.add_subparsers(dest="group", required=True)
    for add_group in GROUPS:
        add_group(sub)
    return root


async def _run(handler: Handler, args: argparse.Namespace, settings: CommonSettings) -> int:
    engine = create_engine(settings.database_url, pool_size=1, app_name="clm-cli")
    try:
        async with engine.begin() as conn:
            return await handler(args, settings, conn)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.handler is None:  # clm webhooks new-key
        print(webhook_secrets.new_cipher_key())
        return 0
    settings = CommonSettings()
    try:
        return asyncio.run(_run(args.handler, args, settings))
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
