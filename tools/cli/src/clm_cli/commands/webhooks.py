"""``clm webhooks``: the signing secrets of inbound provider webhooks, and the stage
engine's outbound subscriptions (:mod:`.subscriptions`)."""

from __future__ import annotations

import argparse

from sqlalchemy.ext.asyncio import AsyncConnection

from clm_cli.commands.stored_credentials import print_stored, report_revoked
from clm_cli.commands.subscriptions import register_subscriptions
from clm_cli.errors import CliError
from clm_infra import webhook_secrets
from clm_infra.settings import CommonSettings


async def _webhooks_add(
    args: argparse.Namespace, settings: CommonSettings, conn: AsyncConnection
) -> int:
    try:
        box = webhook_secrets.cipher(settings)
    except webhook_secrets.SecretsKeyMissing as exc:
        raise CliError(str(exc), 2) from exc
    secret = args.secret or webhook_secrets.new_secret()
    secret_id = await webhook_secrets.store_secret(
        conn, box, source=args.source, provider=args.provider, secret=secret, label=args.label
    )
    print(f"{secret_id}\t{secret}" if not args.secret else f"{secret_id}")
    return 0


async def _webhooks_list(_: argparse.Namespace, __: CommonSettings, conn: AsyncConnection) -> int:
    print_stored(await webhook_secrets.list_secrets(conn), "provider")
    return 0


async def _webhooks_revoke(
    args: argparse.Namespace, _: CommonSettings, conn: AsyncConnection
) -> int:
    revoked = await webhook_secrets.revoke_secret(conn, args.id)
    return report_revoked(revoked, "webhook secret", args.id)


async def _webhooks_new_key(_: argparse.Namespace, __: CommonSettings) -> int:
    print(webhook_secrets.new_cipher_key())
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser(
        "webhooks",
        help="webhook signing secrets per source and provider; outbound subscriptions",
    )
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
    ).set_defaults(action_fn=_webhooks_new_key)
    register_subscriptions(cmds)
