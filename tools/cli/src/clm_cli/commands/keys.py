"""``clm keys``: write keys (events), read tokens (read APIs), admin keys (erasure, merges,
webhook subscriptions); see docs/security.md."""

from __future__ import annotations

import argparse

from sqlalchemy.ext.asyncio import AsyncConnection

from clm_cli.commands.stored_credentials import print_stored, report_revoked
from clm_cli.errors import CliError
from clm_infra import keys
from clm_infra.settings import CommonSettings


async def _keys_create(args: argparse.Namespace, _: CommonSettings, conn: AsyncConnection) -> int:
    key = keys.new_key(args.kind)
    await keys.store_key(conn, key=key, kind=args.kind, source=args.source, label=args.label)
    print(key)
    return 0


async def _keys_list(_: argparse.Namespace, __: CommonSettings, conn: AsyncConnection) -> int:
    print_stored(await keys.list_keys(conn), "kind")
    return 0


async def _keys_revoke(args: argparse.Namespace, _: CommonSettings, conn: AsyncConnection) -> int:
    return report_revoked(await keys.revoke(conn, args.id), "key", args.id)


async def _keys_seed_dev(
    _: argparse.Namespace, settings: CommonSettings, conn: AsyncConnection
) -> int:
    if settings.env != "dev":
        raise CliError("seed-dev needs CLM_ENV=dev", 2)
    await keys.store_key(conn, key=settings.dev_write_key, kind="write", source="dev", label="dev")
    await keys.store_key(conn, key=settings.dev_read_token, kind="read", source="dev", label="dev")
    await keys.store_key(conn, key=settings.dev_admin_key, kind="admin", source="dev", label="dev")
    print("dev keys seeded (source 'dev')")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser(
        "keys", help="API keys: write (events), read (read APIs), admin (erase, merge, webhooks)"
    )
    cmds = group.add_subparsers(dest="action", required=True)
    create = cmds.add_parser("create", help="create a key and print it once")
    create.add_argument("--source", required=True, help="the site or shop this key speaks for")
    create.add_argument(
        "--kind",
        choices=list(keys.KINDS),
        default="write",
        help="write: post events for --source only (safe in a browser); read: the read APIs; "
        "admin: erase, merge, webhook subscriptions",
    )
    create.add_argument("--label", default="")
    create.set_defaults(handler=_keys_create)
    cmds.add_parser("list", help="list keys (never their secrets)").set_defaults(handler=_keys_list)
    revoke = cmds.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id", type=int)
    revoke.set_defaults(handler=_keys_revoke)
    cmds.add_parser(
        "seed-dev",
        help="store CLM_DEV_WRITE_KEY, CLM_DEV_READ_TOKEN and CLM_DEV_ADMIN_KEY (dev only)",
    ).set_defaults(handler=_keys_seed_dev)
