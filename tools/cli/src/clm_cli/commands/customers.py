"""``clm customer show|list|events|export|erase`` and ``clm stages``: the stage engine's
read API."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from clm_cli import output
from clm_cli.api import NotFound, download, request
from clm_cli.commands.read_api import read, token_parent
from clm_cli.errors import CliError
from clm_cli.settings import CliSettings


def _path(customer_id: str) -> str:
    return f"/v1/customers/{quote(customer_id, safe='')}"


async def _customer(settings: CliSettings, customer_id: str, token: str | None) -> Any:
    try:
        return await read(settings, settings.stage_engine(), _path(customer_id), token)
    except NotFound as exc:
        raise CliError(f"unknown customer {customer_id!r} ({exc.detail})") from exc


async def _show(args: argparse.Namespace, settings: CliSettings) -> int:
    doc = await _customer(settings, args.customer_id, args.token)
    if args.history:
        path = _path(args.customer_id) + "/history"
        history = await read(settings, settings.stage_engine(), path, args.token)
        doc = {**doc, "transitions": history["transitions"]}
    if args.json:
        output.print_json(doc)
        return 0
    facts = [(k, v) for k, v in doc.items() if k != "transitions"]
    print(output.table(["field", "value"], facts))
    if args.history:
        print()
        rows = [(t["at"], t["from_stage"], t["to_stage"], t["reason"]) for t in doc["transitions"]]
        print(output.table(["at", "from", "to", "reason"], rows))
    return 0


async def _list(args: argparse.Namespace, settings: CliSettings) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.stage:
        params["stage"] = args.stage
    if args.cursor:
        params["cursor"] = args.cursor
    page = await read(settings, settings.stage_engine(), "/v1/customers", args.token, params)
    if args.json:
        output.print_json(page)
        return 0
    rows = [
        (c["customer_id"], c["stage"], c["stage_entered_at"], c["purchases"], c["revenue"])
        for c in page["customers"]
    ]
    print(output.table(["customer", "stage", "since", "purchases", "revenue"], rows))
    if page.get("next_cursor"):
        stage = f" --stage {args.stage}" if args.stage else ""
        print(f"\nnext page: clm customer list{stage} --cursor {page['next_cursor']}")
    return 0


async def _events(args: argparse.Namespace, settings: CliSettings) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.after:
        params["after"] = args.after
    path = _path(args.customer_id) + "/events"
    try:
        page = await read(settings, settings.stage_engine(), path, args.token, params)
    except NotFound as exc:
        raise CliError(f"unknown customer {args.customer_id!r} ({exc.detail})") from exc
    if args.json:
        output.print_json(page)
        return 0
    rows = [
        (e["occurred_at"], e["type"], e.get("source"), e["event_id"], e["personal"])
        for e in page["events"]
    ]
    print(output.table(["occurred", "type", "source", "event", "personal"], rows))
    if page.get("next"):
        print(f"\nnext page: clm customer events {args.customer_id} --after {page['next']}")
    return 0


async def _export(args: argparse.Namespace, settings: CliSettings) -> int:
    """The export streamed to ``--output`` (through a ``.part`` file, renamed once whole) or
    to standard output."""
    service = settings.stage_engine()
    path = _path(args.customer_id) + "/export"
    token = settings.token("admin", args.token)
    try:
        if args.output is None:
            await download(service, path, sys.stdout.buffer, token=token, key_kind="admin")
            sys.stdout.buffer.flush()
            return 0
        target = Path(args.output)
        part = target.with_name(target.name + ".part")
        try:
            with part.open("wb") as out:
                size = await download(service, path, out, token=token, key_kind="admin")
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
    except NotFound as exc:
        raise CliError(f"unknown customer {args.customer_id!r} ({exc.detail})") from exc
    print(f"exported customer {args.customer_id} to {target} ({size} bytes)")
    return 0


async def _erase(args: argparse.Namespace, settings: CliSettings) -> int:
    if not args.yes:
        raise CliError(
            f"this deletes what we hold about {args.customer_id!r} for good; run again with --yes"
        )
    try:
        doc = await request(
            settings.stage_engine(),
            "DELETE",
            _path(args.customer_id),
            token=settings.token("admin", args.token),
            key_kind="admin",
            params={"mode": args.mode},
        )
    except NotFound as exc:
        raise CliError(f"unknown customer {args.customer_id!r} ({exc.detail})") from exc
    if args.json:
        output.print_json(doc)
    else:
        print(f"{args.mode}d customer {args.customer_id}")
    return 0


async def _stages(args: argparse.Namespace, settings: CliSettings) -> int:
    doc = await read(settings, settings.stage_engine(), "/v1/stages", args.token)
    if args.json:
        output.print_json(doc)
        return 0
    total = sum(doc["stages"].values())
    rows = [
        (stage, count, f"{100 * count / total:.1f}%" if total else "-")
        for stage, count in doc["stages"].items()
    ]
    print(output.table(["stage", "customers", "share"], [*rows, ("total", total, "")]))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = [output.json_parent(), token_parent()]
    group = sub.add_parser("customer", help="one customer's stage, facts and history")
    cmds = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    show = cmds.add_parser("show", parents=common, help="a customer's stage and running facts")
    show.add_argument("customer_id")
    show.add_argument("--history", action="store_true", help="also the stage transitions")
    show.set_defaults(action_fn=_show)

    listing = cmds.add_parser("list", parents=common, help="customers by id, optionally in a stage")
    listing.add_argument("--stage", help="only customers in this stage")
    listing.add_argument("--limit", type=int, default=50, help="page size (default 50)")
    listing.add_argument("--cursor", help="the cursor printed under the previous page")
    listing.set_defaults(action_fn=_list)

    events = cmds.add_parser(
        "events", parents=common, help="a customer's events, personal fields opened (read token)"
    )
    events.add_argument("customer_id")
    events.add_argument("--limit", type=int, default=50, help="page size (default 50, max 500)")
    events.add_argument("--after", help="the cursor printed under the previous page")
    events.set_defaults(action_fn=_events)

    export = cmds.add_parser(
        "export", help="everything held about a customer as one JSON document (admin key)"
    )
    export.add_argument("customer_id")
    export.add_argument("--token", help="the key to present (default: CLM_ADMIN_KEY)")
    export.add_argument("--output", "-o", help="write it to this file (default: standard output)")
    export.set_defaults(action_fn=_export)

    erase = cmds.add_parser(
        "erase", parents=common, help="GDPR erasure (or --mode anonymise); needs an admin key"
    )
    erase.add_argument("customer_id")
    erase.add_argument("--mode", choices=["erase", "anonymise"], default="erase")
    erase.add_argument("--yes", action="store_true", help="really erase")
    erase.set_defaults(action_fn=_erase)

    stages = sub.add_parser("stages", parents=common, help="how many customers are in each stage")
    stages.set_defaults(action_fn=_stages)
