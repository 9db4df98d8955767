"""``clm webhooks subscriptions | subscribe | unsubscribe``: the stage engine's outbound
webhook subscriptions (stage changes or segment entries and exits), through its API with the
admin key (CLM_ADMIN_KEY or --token). A subscription's ``purpose`` is ``marketing`` (the
default: nothing about customers who withdrew marketing consent) or ``service`` (everyone)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from clm_cli import output
from clm_cli.api import NotFound, admin_request
from clm_cli.commands.read_api import token_parent
from clm_cli.errors import CliError
from clm_cli.settings import CliSettings

_PATH = "/v1/webhooks"


def _listed(values: list[Any] | None) -> str:
    return "all" if not values else ",".join(str(v) for v in values)


async def _subscriptions(args: argparse.Namespace, settings: CliSettings) -> int:
    doc = await admin_request(settings, "GET", _PATH, args.token)
    if args.json:
        output.print_json(doc)
        return 0
    rows = [
        (
            s["id"],
            s["purpose"],
            s["url"],
            f"segments {_listed(s['segments'])}" if s["segments"] else _listed(s["stages"]),
            " ".join(f"{k}={n}" for k, n in sorted(s["deliveries"].items())) or "-",
        )
        for s in doc["subscriptions"]
    ]
    print(output.table(["id", "purpose", "url", "wants", "deliveries"], rows))
    return 0


def _split(text: str | None, kind: Callable[[str], Any] = str) -> list[Any] | None:
    if text is None:
        return None
    try:
        return [kind(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CliError(f"not a comma-separated list of ids: {text!r}", 2) from None


async def _subscribe(args: argparse.Namespace, settings: CliSettings) -> int:
    body: dict[str, Any] = {"url": args.url, "purpose": args.purpose}
    if args.stages is not None:
        body["stages"] = _split(args.stages)
    if args.segments is not None:
        body["segments"] = _split(args.segments, int)
    doc = await admin_request(settings, "POST", _PATH, args.token, body)
    if args.json:
        output.print_json(doc)
    else:
        print(f"subscription {doc['id']} ({doc['purpose']}); its signing secret, shown once:")
        print(doc["secret"])
    return 0


async def _unsubscribe(args: argparse.Namespace, settings: CliSettings) -> int:
    try:
        doc = await admin_request(settings, "DELETE", f"{_PATH}/{args.id}", args.token)
    except NotFound as exc:
        raise CliError(f"no active subscription {args.id} ({exc.detail})") from exc
    if args.json:
        output.print_json(doc)
    else:
        print(f"subscription {args.id} removed")
    return 0


def register_subscriptions(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The subscription commands, in the ``webhooks`` group."""
    common = [output.json_parent(), token_parent()]
    cmds.add_parser(
        "subscriptions", parents=common, help="the stage engine's outbound subscriptions"
    ).set_defaults(action_fn=_subscriptions)
    subscribe = cmds.add_parser(
        "subscribe", parents=common, help="subscribe a URL to stage changes or segments"
    )
    subscribe.add_argument("url")
    wants = subscribe.add_mutually_exclusive_group()
    wants.add_argument("--stages", help="comma-separated stages (default: every move)")
    wants.add_argument("--segments", help="comma-separated segment ids: entries and exits")
    subscribe.add_argument(
        "--purpose",
        choices=["marketing", "service"],
        default="marketing",
        help="marketing (default): leave out customers who withdrew marketing consent; "
        "service: every customer",
    )
    subscribe.set_defaults(action_fn=_subscribe)
    unsubscribe = cmds.add_parser("unsubscribe", parents=common, help="remove a subscription")
    unsubscribe.add_argument("id", type=int)
    unsubscribe.set_defaults(action_fn=_unsubscribe)
