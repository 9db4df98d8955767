"""``clm simulate``: generated customer journeys (or a CSV of real transactions) sent to the
ingest over HTTP or written as JSON lines, with a truth file to check the stack against."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from clm_cli.errors import CliError
from clm_cli.simulator import transactions
from clm_cli.simulator.personas import SimConfig, simulate
from clm_cli.simulator.sender import IngestClient, Plan, Progress, post_all
from clm_cli.simulator.truth import truth_document
from clm_domain.kpis import WINDOWS
from clm_domain.rules import LifecycleRules, RulesError, load_rules
from clm_infra.settings import CommonSettings

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
STREAM_RATE = 20.0


def duration(text: str) -> timedelta:
    """``90``, ``30s``, ``5m``, ``2h``, ``30d`` → a timedelta (argparse type)."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30s, 5m, 2h or 30d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def instant(text: str) -> datetime:
    """An RFC 3339 time (``Z`` or an offset; UTC without one) (argparse type)."""
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time like 2026-03-01T12:00Z") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def window_names(text: str) -> dict[str, timedelta]:
    out = {}
    for name in (n.strip() for n in text.split(",") if n.strip()):
        out[name] = duration(name)
    return out


def _ingest_url() -> str:
    if url := os.environ.get("CLM_INGEST_URL", "").strip():
        return url
    host = os.environ.get("CLM_INGEST_HOST", "").strip() or "127.0.0.1"
    port = os.environ.get("CLM_INGEST_PORT", "").strip() or "8001"
    return f"http://{host}:{port}"


def _rules(path: Path | None) -> LifecycleRules:
    try:
        return load_rules(path)
    except RulesError as exc:
        raise CliError(str(exc), 2) from None


def _without_source(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events as sent when no --source is given: the ingest takes the write key's."""
    return [{k: v for k, v in d.items() if k != "source"} for d in docs]


class _Run:
    """One simulate run: what was generated (for the truth) and how it is delivered."""

    def __init__(self, args: argparse.Namespace, settings: CommonSettings) -> None:
        self.args = args
        self.settings = settings
        self.rules = _rules(args.rules)
        self.source = args.source or "dev"
        self.docs: list[dict[str, Any]] = []
        self.personas: dict[str, str] = {}
        self.as_of = args.as_of or datetime.now(UTC).replace(microsecond=0)
        self.stop = asyncio.Event()
        self.progress = Progress(self.rate)
        self.client: IngestClient | None = None

    @property
    def rate(self) -> float:
        if self.args.rate is not None:
            return float(self.args.rate)
        return STREAM_RATE if self.args.duration is not None else 0.0

    def config(self, seed: int, as_of: datetime, prefix: str, **extra: Any) -> SimConfig:
        a = self.args
        recent = a.recent or (timedelta(hours=1) if a.duration is not None else timedelta(days=30))
        return SimConfig(
            seed=seed,
            customers=a.customers,
            as_of=as_of,
            source=self.source,
            prefix=prefix,
            recent=recent,
            history_days=a.history_days,
            at_risk_days=self.rules.at_risk.inactive_days,
            churned_days=self.rules.churned.inactive_days,
            **extra,
        )

    @property
    def prefix(self) -> str:
        return str(self.args.prefix or f"sim{int(self.as_of.timestamp())}")

    def outgoing(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return docs if self.args.source else _without_source(docs)

    async def deliver(self, docs: list[dict[str, Any]], due: Any = None) -> None:
        if self.args.out is not None:
            self.write_lines(docs)
            return
        if self.client is None:
            key = self.args.key or os.environ.get("CLM_WRITE_KEY") or self.settings.dev_write_key
            self.client = IngestClient(self.args.url or _ingest_url(), key, seed=self.args.seed)
        plan = Plan(batch=self.args.batch, workers=self.args.workers, rate=self.rate)
        await post_all(
            self.outgoing(docs), self.client, plan, self.progress, due=due, stop=self.stop
        )

    def write_lines(self, docs: list[dict[str, Any]]) -> None:
        lines = b"".join(orjson.dumps(d) + b"\n" for d in self.outgoing(docs))
        if self.args.out == "-":
            sys.stdout.buffer.write(lines)
            sys.stdout.flush()
        else:
            with open(self.args.out, "ab") as handle:
                handle.write(lines)
        self.progress.accepted += len(docs)

    # ------------------------------------------------------------------ the three modes
    async def journeys(self) -> None:
        sim = simulate(self.config(self.args.seed, self.as_of, self.prefix))
        self.docs, self.personas = sim.docs, {k: p.value for k, p in sim.personas.items()}
        await self.deliver(sim.docs)

    async def stream(self, length: timedelta) -> None:
        """Waves of journeys ending now, until ``length`` passed (0: until stopped)."""
        began = time.monotonic()
        prefix = self.prefix
        wave = 0
        while not self.stop.is_set():
            if length and time.monotonic() - began >= length.total_seconds():
                break
            now = datetime.now(UTC)
            spend = {} if wave == 0 else {"spend_days": 0}  # a month of spend comes first
            sim = simulate(self.config(self.args.seed + wave, now, f"{prefix}-w{wave}", **spend))
            if self.args.truth:
                self.docs.extend(sim.docs)
                self.personas.update({k: p.value for k, p in sim.personas.items()})
            await self.deliver(sim.docs)
            self.as_of = now
            wave += 1

    async def csv(self, path: Path) -> None:
        a = self.args
        try:
            rows = transactions.load_transactions(path, currency=a.currency)
        except transactions.CsvError as exc:
            raise CliError(str(exc), 2) from None
        due = None
        if a.compress:
            start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
            rows = transactions.compress(rows, start, a.compress)
            wall0 = time.monotonic() - (datetime.now(UTC) - start).total_seconds()
        elif a.shift_to_now:
            rows = transactions.shift_to(rows, self.as_of)
        prefix = a.prefix or f"csv-{path.stem}"
        self.docs = transactions.purchase_events(rows, prefix=prefix, source=self.source)
        latest = max(r.at for r in rows)
        self.as_of = max(self.as_of, latest) if a.as_of is None else self.as_of
        if a.compress:
            times = [
                wall0 + (transactions.parse_date(d["occurred_at"]) - start).total_seconds()
                for d in self.docs
            ]
            due = times.__getitem__
        await self.deliver(self.docs, due)

    def truth(self) -> dict[str, Any]:
        a = self.args
        about = {
            "generator": "csv" if a.csv else "personas",
            "seed": a.seed,
            "source": self.source,
            "rules": str(a.rules) if a.rules else "deploy/config/lifecycle.yaml (default)",
        }
        return truth_document(
            self.docs,
            as_of=self.as_of,
            windows=a.windows,
            rules=self.rules,
            reporting_currency=self.settings.reporting_currency,
            personas=self.personas or None,
            about=about,
        )


async def _simulate(args: argparse.Namespace, settings: CommonSettings) -> int:
    if args.compress is not None and args.compress <= 0:
        raise CliError("--compress must be a positive factor (e.g. 1000)", 2)
    if (args.compress or args.shift_to_now) and not args.csv:
        raise CliError("--compress and --shift-to-now apply to --csv", 2)
    if args.out and args.out != "-":
        await asyncio.to_thread(Path(args.out).unlink, missing_ok=True)
    run = _Run(args, settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, run.stop.set)
    try:
        if args.csv:
            await run.csv(args.csv)
        elif args.duration is not None:
            await run.stream(args.duration)
        else:
            await run.journeys()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        if run.client is not None:
            await run.client.aclose()
    done = run.progress.done()
    if args.out is None:
        print(done, file=sys.stderr)
    elif args.out != "-":
        print(f"simulate: {run.progress.accepted} events written to {args.out}", file=sys.stderr)
    if args.truth:
        doc = run.truth()
        args.truth.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        print(
            f"simulate: truth as of {doc['as_of']} for {len(doc['customers'])} customers "
            f"in {args.truth}",
            file=sys.stderr,
        )
    return 1 if run.progress.rejected else 0


def _what_to_send(what: argparse._ArgumentGroup) -> None:
    """Journeys (how many, how far back, which ids) or a CSV to replay."""
    what.add_argument("--customers", type=int, default=200, help="journeys (per wave: --duration)")
    what.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    what.add_argument("--as-of", type=instant, help="journeys end by this time (default now)")
    what.add_argument(
        "--recent",
        type=duration,
        help="latest activity of each journey within this span before --as-of "
        "(default 30d; 1h with --duration)",
    )
    what.add_argument("--history-days", type=int, default=400, help="oldest history (400)")
    what.add_argument("--prefix", help="event and customer id prefix (default sim<as-of unix>)")
    what.add_argument(
        "--source", help="source of the events (default: none sent, the key's source applies)"
    )
    what.add_argument("--csv", type=Path, help="replay this CSV of transactions as purchases")
    what.add_argument("--currency", default="USD", help="CSV rows without a currency (USD)")
    what.add_argument(
        "--compress", type=float, help="CSV: replay live, the file's span N times shorter"
    )
    what.add_argument(
        "--shift-to-now", action="store_true", help="CSV: move dates so the last one is now"
    )


def _where_and_how(how: argparse._ArgumentGroup) -> None:
    """The ingest (or a file), the key, and the pace."""
    how.add_argument("--url", help="ingest URL (default CLM_INGEST_URL or http://127.0.0.1:8001)")
    how.add_argument("--key", help="write key (default CLM_WRITE_KEY, else CLM_DEV_WRITE_KEY)")
    how.add_argument("--out", help="write JSON lines to this file ('-': stdout) instead")
    how.add_argument(
        "--batch", type=int, default=100, help="events per request, ≤ 500 (1: POST /v1/events)"
    )
    how.add_argument("--workers", type=int, default=4, help="requests in flight (4)")
    how.add_argument(
        "--rate", type=float, help="target events/s (default: as fast as possible; 20 streaming)"
    )
    how.add_argument(
        "--duration",
        type=duration,
        help="keep sending new journeys for this long (0: until stopped)",
    )


def _truth_options(truth: argparse._ArgumentGroup) -> None:
    """The expected stages and KPIs: where, over which windows, by which rules."""
    truth.add_argument("--truth", type=Path, help="write expected stages and KPIs (JSON) here")
    truth.add_argument(
        "--windows",
        type=window_names,
        default=dict(WINDOWS),
        help="KPI windows of the truth, comma-separated (default 1h,24h,7d,30d,90d)",
    )
    truth.add_argument(
        "--rules",
        type=Path,
        default=Path(os.environ["CLM_STAGE_ENGINE_RULES_PATH"])
        if os.environ.get("CLM_STAGE_ENGINE_RULES_PATH")
        else None,
        help="lifecycle rule file (default CLM_STAGE_ENGINE_RULES_PATH or the shipped one)",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "simulate",
        help="send generated customer journeys (or a CSV of transactions) to the ingest",
        description="Generate realistic journeys (seeded: the same seed and --as-of give the "
        "same events) or replay a CSV of transactions; POST them to the ingest (default) or "
        "write JSON lines (--out); optionally write the expected stages and KPIs (--truth).",
    )
    _what_to_send(cmd.add_argument_group("what to send"))
    _where_and_how(cmd.add_argument_group("where and how"))
    _truth_options(cmd.add_argument_group("truth"))
    cmd.set_defaults(action_fn=_simulate)
