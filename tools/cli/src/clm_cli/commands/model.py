"""``clm model``: the predictive models (BG/NBD for P(alive) and expected purchases,
Gamma-Gamma for spend, hence predicted CLV).

    clm model fit [--json]                       refit the live models now (the stage engine)
    clm model show [--json]                      the model version scored with, the last attempt
    clm model fit --csv FILE [--calibration-end DATE] [--currency C] [--json]
                  [--predictions OUT.csv --horizon-weeks N] [--monthly-discount D]

``fit`` without ``--csv`` asks the stage engine to refit from every customer's facts
(``POST /v1/model/fit``, admin key) and prints the stored version, or the refusal and why
(exit status 1); ``show`` prints ``GET /v1/model`` (read token).

``fit --csv`` fits both models on a file of transactions (the columns of ``clm simulate
--csv``) without touching the services or the database: the file's rows become the
one-transaction-a-day summary (:mod:`clm_predict.rfm`, time in weeks), the fitted parameters
are printed, and ``--predictions`` writes every customer's scores. The fit itself
(:func:`fit_models`) and what is printed (:func:`report_document`) take a summary, whatever it
was built from.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clm_cli import output
from clm_cli.api import request
from clm_cli.commands.read_api import read, token_parent
from clm_cli.errors import CliError
from clm_predict import bgnbd, gamma_gamma
from clm_predict.clv import predicted_clv
from clm_predict.mle import FitError
from clm_predict.rfm import RfmSummary, summary_from_transactions
from clm_simulator import transactions

if TYPE_CHECKING:
    from clm_cli.settings import CliSettings

DEFAULT_HORIZON_WEEKS = 52.0
PREDICTION_COLUMNS = (
    "customer_id", "frequency", "recency", "T", "p_alive", "expected_purchases", "predicted_clv",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class FittedModels:
    summary: RfmSummary
    bgnbd: bgnbd.BgNbdFit
    gamma_gamma: gamma_gamma.GammaGammaFit


def fit_models(summary: RfmSummary) -> FittedModels:
    """Both models fitted on ``summary``; CliError (status 2) when the data cannot carry them."""
    try:
        return FittedModels(summary, bgnbd.fit(summary), gamma_gamma.fit(summary))
    except FitError as exc:
        raise CliError(
            f"{exc} ({len(summary)} customers, {summary.repeat_customers} with repeat purchases)",
            2,
        ) from None


def spend_frequency_correlation(summary: RfmSummary) -> float | None:
    """The correlation of mean spend and frequency among repeat customers (the Gamma-Gamma
    model assumes it is about 0)."""
    repeat = summary.frequency > 0
    if np.count_nonzero(repeat) < 3:
        return None
    x, m = summary.frequency[repeat], summary.monetary[repeat]
    if float(np.ptp(x)) == 0 or float(np.ptp(m)) == 0:
        return None
    return round(float(np.corrcoef(x, m)[0, 1]), 4)


def report_document(
    fitted: FittedModels, calibration_end: date | None, currency: str
) -> dict[str, Any]:
    bg, gg = fitted.bgnbd, fitted.gamma_gamma
    return {
        "bgnbd": {
            "r": bg.params.r,
            "alpha": bg.params.alpha,
            "a": bg.params.a,
            "b": bg.params.b,
            "log_likelihood": bg.log_likelihood,
        },
        "gamma_gamma": {"p": gg.params.p, "q": gg.params.q, "v": gg.params.v},
        "customers": bg.customers,
        "repeat_customers": fitted.summary.repeat_customers,
        "unit": "week",
        "calibration_end": None if calibration_end is None else calibration_end.isoformat(),
        "currency": currency,
        "spend_frequency_correlation": spend_frequency_correlation(fitted.summary),
    }


def report_text(doc: dict[str, Any]) -> str:
    bg, gg = doc["bgnbd"], doc["gamma_gamma"]
    corr = doc["spend_frequency_correlation"]
    return "\n".join(
        [
            f"customers: {doc['customers']} ({doc['repeat_customers']} with repeat purchases), "
            f"calibration end {doc['calibration_end'] or 'the last purchase day'}, "
            f"time in {doc['unit']}s, amounts in {doc['currency']}",
            f"BG/NBD:      r = {bg['r']:.4f}  alpha = {bg['alpha']:.4f}  a = {bg['a']:.4f}  "
            f"b = {bg['b']:.4f}  (log-likelihood {bg['log_likelihood']:.2f})",
            f"Gamma-Gamma: p = {gg['p']:.4f}  q = {gg['q']:.4f}  v = {gg['v']:.4f}"
            + ("" if corr is None else f"  (spend-frequency correlation {corr:+.2f})"),
        ]
    )


def write_predictions(
    path: Path, fitted: FittedModels, horizon_weeks: float, monthly_discount: float
) -> int:
    """One row a customer: the summary and the scores over the horizon; the rows written."""
    s, bg, gg = fitted.summary, fitted.bgnbd.params, fitted.gamma_gamma.params
    horizon = horizon_weeks * 7 / s.unit_days
    alive = bgnbd.p_alive(bg, s.frequency, s.recency, s.age)
    purchases = bgnbd.expected_purchases(bg, horizon, s.frequency, s.recency, s.age)
    value = predicted_clv(bg, gg, s, horizon_weeks, monthly_discount)
    try:
        with path.open("w", newline="", encoding="utf-8") as handle:
            out = csv.writer(handle)
            out.writerow(PREDICTION_COLUMNS)
            for i, customer in enumerate(s.customer_ids):
                facts = (int(s.frequency[i]), f"{s.recency[i]:.4f}", f"{s.age[i]:.4f}")
                scores = (f"{alive[i]:.6f}", f"{purchases[i]:.6f}", f"{value[i]:.4f}")
                out.writerow((customer, *facts, *scores))
    except OSError as exc:
        raise CliError(f"{path}: cannot write the predictions: {exc.strerror}", 2) from None
    return len(s)


def summary_from_csv(
    path: Path, calibration_end: date | None, currency: str | None
) -> tuple[RfmSummary, str]:
    """The file's one-currency summary (``currency``: keep only its rows) and its currency."""
    try:
        rows = transactions.load_transactions(path, currency=currency or "USD")
    except transactions.CsvError as exc:
        raise CliError(str(exc), 2) from None
    found = sorted({r.currency for r in rows})
    if currency is not None:
        rows = [r for r in rows if r.currency == currency]
        if not rows:
            raise CliError(f"{path}: no transactions in {currency} (found {', '.join(found)})", 2)
    elif len(found) > 1:
        raise CliError(
            f"{path}: transactions in {len(found)} currencies ({', '.join(found)}); the spend "
            "model takes one: choose it with --currency",
            2,
        )
    kept = [(r.customer_id, r.at, r.amount) for r in rows]
    summary = summary_from_transactions(kept, calibration_end=calibration_end)
    if len(summary) == 0:
        raise CliError(f"{path}: no transaction on or before {calibration_end}", 2)
    return summary, currency or found[0]


def _fit_csv(args: argparse.Namespace) -> str:
    summary, currency = summary_from_csv(args.csv, args.calibration_end, args.currency)
    fitted = fit_models(summary)
    doc = report_document(fitted, args.calibration_end, currency)
    if args.predictions is not None:
        write_predictions(args.predictions, fitted, args.horizon_weeks, args.monthly_discount)
    return json.dumps(doc) if args.json else report_text(doc)


#: How long ``clm model fit`` waits for the stage engine's fit (a large history takes seconds).
LIVE_FIT_TIMEOUT_S = 600.0


async def _fit(args: argparse.Namespace, settings: CliSettings) -> int:
    if args.csv is None:
        return await _fit_live(args, settings)
    if args.monthly_discount < 0:
        raise CliError("--monthly-discount must be >= 0 (e.g. 0.01 for 1 % a month)", 2)
    if args.horizon_weeks <= 0:
        raise CliError("--horizon-weeks must be > 0", 2)
    print(await asyncio.to_thread(_fit_csv, args))
    return 0


async def _fit_live(args: argparse.Namespace, settings: CliSettings) -> int:
    doc = await request(
        settings.stage_engine(),
        "POST",
        "/v1/model/fit",
        token=settings.token("admin", args.token),
        key_kind="admin",
        timeout_s=LIVE_FIT_TIMEOUT_S,
    )
    if args.json:
        output.print_json(doc)
    elif doc["outcome"] == "fitted":
        bg = doc["bgnbd"]
        spend = ", ".join(sorted(doc["gamma_gamma"])) or "none"
        print(
            f"model version {doc['version']}: {doc['customers']} customers "
            f"({doc['repeat_customers']} repeat), BG/NBD r = {bg['r']:.4f} alpha = "
            f"{bg['alpha']:.4f} a = {bg['a']:.4f} b = {bg['b']:.4f}; spend models: {spend}"
            + (f" ({doc['reason']})" if doc["reason"] else "")
        )
    else:
        print(f"not refitted: {doc['reason']}")
    return 0 if doc["outcome"] == "fitted" else 1


async def _show(args: argparse.Namespace, settings: CliSettings) -> int:
    doc = await read(settings, settings.stage_engine(), "/v1/model", args.token)
    if args.json:
        output.print_json(doc)
        return 0
    current, last = doc["current"], doc["last_attempt"]
    if current is None:
        print("no model fitted yet (clm model fit)")
    else:
        print(
            f"model version {current['version']} fitted {current['attempted_at']} on "
            f"{current['customers']} customers; BG/NBD {current['bgnbd']}; "
            f"spend models {current['gamma_gamma']}"
        )
    if last is not None and last["outcome"] == "refused":
        print(f"last refit refused at {last['attempted_at']}: {last['reason']}")
    return 0


def iso_date(text: str) -> date:
    """``YYYY-MM-DD`` (argparse type)."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 1997-09-30") from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "model",
        help="predictive models: P(alive), expected purchases, predicted CLV",
        description="BG/NBD (P(alive), expected purchases) and Gamma-Gamma (spend) models, "
        "fitted by maximum likelihood.",
    )
    actions = cmd.add_subparsers(dest="action", required=True, metavar="ACTION")
    fit = actions.add_parser(
        "fit",
        parents=[token_parent()],
        help="refit the live models now, or (--csv) fit a file of transactions offline",
        description="Without --csv: the stage engine refits BG/NBD and Gamma-Gamma from "
        "every customer's facts and stores the new version (admin key). With --csv: fit "
        "both on a CSV of transactions (the columns of `clm simulate --csv`: customer_id, "
        "date, amount, optionally currency), one transaction a UTC day, time in weeks, "
        "without touching the services or the database; print the parameters.",
    )
    fit.add_argument("--csv", type=Path, help="fit offline on these transactions (CSV)")
    fit.add_argument(
        "--calibration-end",
        type=iso_date,
        help="last day of the fit, included (default: the last purchase day)",
    )
    fit.add_argument(
        "--currency",
        type=str.upper,
        help="fit on this currency's rows only (rows without a currency count as it); "
        "without it the file must hold one currency (rows without one: USD)",
    )
    fit.add_argument("--json", action="store_true", help="print the parameters as JSON")
    fit.add_argument("--predictions", type=Path, help="write each customer's scores (CSV) here")
    fit.add_argument(
        "--horizon-weeks",
        type=float,
        default=DEFAULT_HORIZON_WEEKS,
        help="horizon of the expected purchases and CLV in --predictions (default 52)",
    )
    fit.add_argument(
        "--monthly-discount",
        type=float,
        default=0.0,
        help="monthly discount rate of the predicted CLV (default 0)",
    )
    fit.set_defaults(action_fn=_fit)
    show = actions.add_parser(
        "show",
        parents=[output.json_parent(), token_parent()],
        help="the model version the scores use, and the last fit attempt",
    )
    show.set_defaults(action_fn=_show)
