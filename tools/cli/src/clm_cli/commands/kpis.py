"""``clm kpis``: the metrics service's KPIs over a window, as a table or JSON."""

from __future__ import annotations

import argparse
from typing import Any

from clm_cli import output
from clm_cli.commands.read_api import read, token_parent
from clm_cli.settings import CliSettings

# What a person reads first; everything else follows in the service's order.
HEADLINE = (
    "events",
    "site_visits",
    "leads",
    "lead_conversion_rate",
    "new_customers",
    "cac",
    "conversion_rate_visitors",
    "purchases",
    "revenue",
    "average_order_value",
    "purchase_frequency",
    "repeat_purchase_rate",
    "churn_rate",
    "retention_rate",
    "csat",
    "nps",
    "referrals",
    "clv_historical",
)


async def _kpis(args: argparse.Namespace, settings: CliSettings) -> int:
    params: dict[str, Any] = {}
    if args.from_ or args.to:
        params.update({"from": args.from_, "to": args.to})
    else:
        params["window"] = args.window
    for name in ("source", "channel"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    doc = await read(settings, settings.metrics(), "/v1/kpis", args.token, params)
    if args.json:
        output.print_json(doc)
        return 0
    print(
        f"KPIs {doc['from']} .. {doc['to']}"
        + (f" (window {doc['window']})" if doc.get("window") else "")
    )
    first = [(name, doc.get(name)) for name in HEADLINE if name in doc]
    rest = output.flatten(
        {k: v for k, v in doc.items() if k not in HEADLINE and k not in ("window", "from", "to")}
    )
    if not args.all:
        rest = [(k, v) for k, v in rest if k.startswith("customers_by_stage.")]
    print(output.table(["kpi", "value"], [*first, *rest]))
    if not args.all:
        print("\n(--all for every KPI and breakdown, --json for scripts)")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "kpis", parents=[output.json_parent(), token_parent()], help="lifecycle KPIs over a window"
    )
    cmd.add_argument(
        "--window", default="24h", help="1h, 24h, 7d, 30d, 90d or e.g. 90m (default 24h)"
    )
    cmd.add_argument("--from", dest="from_", help="start (RFC 3339), with --to instead of --window")
    cmd.add_argument("--to", help="end (RFC 3339)")
    cmd.add_argument("--source", help="only events of this source")
    cmd.add_argument("--channel", help="only events of this channel")
    cmd.add_argument("--all", action="store_true", help="every KPI and breakdown, not the headline")
    cmd.set_defaults(action_fn=_kpis)
