"""``clm segments``: define segments and look at them (the stage engine's API).

    clm segments list | show ID                       the definitions (read token)
    clm segments create --file F [--announce-backfill] define one (admin key)
    clm segments update ID --file F                   change one: a new condition is a new version
    clm segments delete ID                            its members leave it; its history stays
    clm segments members ID [--after C] [--limit N] [--purpose marketing]
                                                      its members now, by customer id
    clm segments history ID [--from T] [--to T] [--bucket hour|day]

The file of ``create`` and ``update`` is a JSON object: ``name``, ``description``,
``condition`` (``docs/segments.md``) and ``announce_backfill``; ``update`` sends only the
fields the file has.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from clm_cli import output
from clm_cli.api import NotFound, admin_request
from clm_cli.commands.read_api import read, token_parent
from clm_cli.errors import CliError
from clm_cli.settings import CliSettings

_FIELDS = ("name", "description", "condition", "announce_backfill")


def _path(segment_id: int, tail: str = "") -> str:
    return f"/v1/segments/{segment_id}{tail}"


def definition_file(path: Path) -> dict[str, Any]:
    """The JSON object of a definition file, or a CliError saying what is wrong with it."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"{path}: cannot read it: {exc.strerror}", 2) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: not JSON ({exc})", 2) from None
    if not isinstance(doc, dict):
        raise CliError(f"{path}: must hold a JSON object ({', '.join(_FIELDS)})", 2)
    unknown = sorted(set(doc) - set(_FIELDS))
    if unknown:
        raise CliError(f"{path}: unknown fields {', '.join(unknown)} ({', '.join(_FIELDS)})", 2)
    return doc


def _backfill(doc: dict[str, Any]) -> str:
    backfill = doc.get("backfill")
    if backfill is None:
        return "-"
    total = "?" if backfill["total"] is None else backfill["total"]
    return f"{backfill['status']} {backfill['done']}/{total} (v{backfill['version']})"


def _print_segment(doc: dict[str, Any]) -> None:
    shown = {k: v for k, v in doc.items() if k not in ("condition", "versions", "backfill")}
    shown["backfill"] = _backfill(doc)
    print(output.table(["field", "value"], list(shown.items())))
    print("\ncondition:")
    print(json.dumps(doc["condition"], indent=2))
    if doc.get("versions"):
        print()
        rows = [(v["version"], v["created_at"], v["name"]) for v in doc["versions"]]
        print(output.table(["version", "created", "name"], rows))


async def _unknown_is_an_error(segment_id: int, call: Awaitable[Any]) -> Any:
    try:
        return await call
    except NotFound as exc:
        raise CliError(f"unknown segment {segment_id} ({exc.detail})") from exc


async def _list(args: argparse.Namespace, settings: CliSettings) -> int:
    doc = await read(settings, settings.stage_engine(), "/v1/segments", args.token)
    if args.json:
        output.print_json(doc)
        return 0
    rows = [(s["id"], s["name"], s["version"], _backfill(s)) for s in doc["segments"]]
    print(output.table(["id", "name", "version", "backfill"], rows))
    return 0


async def _show(args: argparse.Namespace, settings: CliSettings) -> int:
    call = read(settings, settings.stage_engine(), _path(args.id), args.token)
    doc = await _unknown_is_an_error(args.id, call)
    if args.json:
        output.print_json(doc)
    else:
        _print_segment(doc)
    return 0


async def _create(args: argparse.Namespace, settings: CliSettings) -> int:
    body = definition_file(args.file)
    if args.announce_backfill:
        body["announce_backfill"] = True
    doc = await admin_request(settings, "POST", "/v1/segments", args.token, body)
    if args.json:
        output.print_json(doc)
    else:
        print(f"segment {doc['id']} {doc['name']!r} defined; backfill {_backfill(doc)}")
    return 0


async def _update(args: argparse.Namespace, settings: CliSettings) -> int:
    body = definition_file(args.file)
    call = admin_request(settings, "PATCH", _path(args.id), args.token, body)
    doc = await _unknown_is_an_error(args.id, call)
    if args.json:
        output.print_json(doc)
    else:
        print(f"segment {doc['id']} {doc['name']!r} at version {doc['version']}")
    return 0


async def _delete(args: argparse.Namespace, settings: CliSettings) -> int:
    call = admin_request(settings, "DELETE", _path(args.id), args.token)
    doc = await _unknown_is_an_error(args.id, call)
    if args.json:
        output.print_json(doc)
    else:
        print(f"deleted segment {args.id}")
    return 0


async def _members(args: argparse.Namespace, settings: CliSettings) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.after:
        params["after"] = args.after
    if args.purpose:
        params["purpose"] = args.purpose
    call = read(settings, settings.stage_engine(), _path(args.id, "/members"), args.token, params)
    page = await _unknown_is_an_error(args.id, call)
    if args.json:
        output.print_json(page)
        return 0
    rows = [(m["customer_id"], m["entered_at"], m["version"]) for m in page["members"]]
    print(output.table(["customer", "entered", "version"], rows))
    for reason, n in page.get("excluded", {}).items():
        print(f"\nleft out: {n} ({reason.replace('_', ' ')})")
    if page["next"]:
        print(f"\nnext page: clm segments members {args.id} --after {page['next']}")
    return 0


async def _history(args: argparse.Namespace, settings: CliSettings) -> int:
    params = {"bucket": args.bucket}
    params |= {k: v for k, v in (("from", args.from_), ("to", args.to)) if v}
    path = _path(args.id, "/history")
    call = read(settings, settings.stage_engine(), path, args.token, params)
    doc = await _unknown_is_an_error(args.id, call)
    if args.json:
        output.print_json(doc)
        return 0
    rows = [(b["end"], b["entries"], b["exits"], b["size"]) for b in doc["buckets"]]
    print(output.table([f"{args.bucket} ending", "entries", "exits", "size"], rows))
    print(
        f"\nfrom {doc['from']} ({doc['size_at_from']} members) to {doc['to']} "
        f"({doc['size_at_to']}): {doc['entries']} entries, {doc['exits']} exits"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = [output.json_parent(), token_parent()]
    group = sub.add_parser(
        "segments",
        help="segments: define them, their members and history",
        description="Segments: named conditions over customers' facts, kept live by the "
        "stage engine (docs/segments.md). Defining, changing and deleting needs an admin key "
        "(CLM_ADMIN_KEY or --token); reading, the read token.",
    )
    cmds = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    cmds.add_parser("list", parents=common, help="the segments defined").set_defaults(
        action_fn=_list
    )
    show = cmds.add_parser("show", parents=common, help="a segment: condition, size, backfill")
    show.add_argument("id", type=int)
    show.set_defaults(action_fn=_show)
    create = cmds.add_parser("create", parents=common, help="define a segment from a JSON file")
    create.add_argument("--file", type=Path, required=True, help="name, description, condition")
    create.add_argument(
        "--announce-backfill",
        action="store_true",
        help="publish the backfill's entries (cause backfill) on the stream and to webhooks",
    )
    create.set_defaults(action_fn=_create)
    update = cmds.add_parser("update", parents=common, help="change a segment from a JSON file")
    update.add_argument("id", type=int)
    update.add_argument("--file", type=Path, required=True, help="the fields to change")
    update.set_defaults(action_fn=_update)
    delete = cmds.add_parser("delete", parents=common, help="delete a segment (history stays)")
    delete.add_argument("id", type=int)
    delete.set_defaults(action_fn=_delete)
    members = cmds.add_parser("members", parents=common, help="a segment's members now")
    members.add_argument("id", type=int)
    members.add_argument("--after", help="the customer id printed under the previous page")
    members.add_argument("--limit", type=int, default=100, help="page size (default 100)")
    members.add_argument(
        "--purpose",
        choices=["marketing"],
        help="marketing: leave out (and count) members who withdrew marketing consent",
    )
    members.set_defaults(action_fn=_members)
    history = cmds.add_parser(
        "history", parents=common, help="entries, exits and size by hour or day"
    )
    history.add_argument("id", type=int)
    history.add_argument(
        "--from", dest="from_", metavar="T", help="RFC 3339 (default: 7 days before --to)"
    )
    history.add_argument("--to", metavar="T", help="RFC 3339 (default: now)")
    history.add_argument("--bucket", choices=["hour", "day"], default="day")
    history.set_defaults(action_fn=_history)
