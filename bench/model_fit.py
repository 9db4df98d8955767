"""The predictive models at the size of the bench history: 1.65M customers.

``python -m bench.model_fit [--customers N] [--write]`` (no Kafka, no Postgres: pure CPU):
seeded BG/NBD and Gamma-Gamma histories with the published CDNOW parameters (first purchases
spread over 400 days, amounts around $35), as day-level transactions. Timed, each once:

- the one-transaction-a-day summary from the transaction arrays (``summary_from_arrays``);
- the BG/NBD fit and the Gamma-Gamma fit (maximum likelihood);
- scoring every customer: P(alive), expected purchases in 90 days, and the 12-month CLV.

Prints one JSON line; ``--write`` (and ``python -m bench model_fit``, as ``make bench`` runs
it) also writes the ``model-fit`` section of RESULTS.md. The target: a fit of the 1.65M
customers (summary and both models) well under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from bench.results import write_section
from clm_predict import bgnbd, gamma_gamma
from clm_predict.clv import predicted_clv
from clm_predict.rfm import summary_from_arrays
from clm_predict.simulate import simulate

CUSTOMERS = 1_650_000
HISTORY_DAYS = 400
SEED = 31
TRUE_BG = bgnbd.BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
TRUE_GG = gamma_gamma.GammaGammaParams(p=6.25, q=3.74, v=15.44)
TARGET_S = 60.0
T = TypeVar("T")


def timed(what: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = what()
    return value, time.perf_counter() - started


def measure(customers: int) -> dict[str, Any]:
    rng = np.random.default_rng(SEED)
    first_day = rng.integers(0, HISTORY_DAYS, customers)
    sim = simulate(TRUE_BG, TRUE_GG, (HISTORY_DAYS - 1 - first_day) / 7.0, seed=SEED)
    day = first_day[sim.customer] + np.floor(sim.time * 7).astype(np.int64)
    amount = np.round(sim.amount, 2)
    ids = tuple(f"c{i}" for i in range(customers))
    summary, summary_s = timed(
        lambda: summary_from_arrays(ids, sim.customer, day, amount, end_day=HISTORY_DAYS - 1)
    )
    bg, bg_s = timed(lambda: bgnbd.fit(summary))
    gg, gg_s = timed(lambda: gamma_gamma.fit(summary))
    x, t_x, age = summary.frequency, summary.recency, summary.age

    def score() -> float:
        alive = bgnbd.p_alive(bg.params, x, t_x, age)
        purchases = bgnbd.expected_purchases(bg.params, 90 / 7, x, t_x, age)
        value = predicted_clv(bg.params, gg.params, summary, 365.25 / 7)
        return float(alive.mean() + purchases.mean() + value.mean())

    _, score_s = timed(score)
    return {
        "bench": "model_fit",
        "customers": len(summary),
        "transactions": len(sim.time),
        "repeat_customers": summary.repeat_customers,
        "summary_s": round(summary_s, 2),
        "bgnbd_fit_s": round(bg_s, 2),
        "gamma_gamma_fit_s": round(gg_s, 2),
        "fit_total_s": round(summary_s + bg_s + gg_s, 2),
        "score_s": round(score_s, 2),
        "bgnbd": {k: round(getattr(bg.params, k), 4) for k in ("r", "alpha", "a", "b")},
        "gamma_gamma": {k: round(getattr(gg.params, k), 4) for k in ("p", "q", "v")},
    }


def section(result: dict[str, Any]) -> str:
    total = result["fit_total_s"]
    met = "yes" if total < TARGET_S else "**no**"
    bg, gg = result["bgnbd"], result["gamma_gamma"]
    return "\n".join(
        [
            "## Predictive models: fit and scoring at the bench history",
            "",
            f"{result['customers']:,} simulated customers ({result['transactions']:,} "
            f"transactions, {result['repeat_customers']:,} repeat customers; BG/NBD and "
            "Gamma-Gamma with the published CDNOW parameters), one process, pure CPU.",
            "",
            "| step | seconds |",
            "|---|---:|",
            f"| summary (one transaction a day) | {result['summary_s']:.2f} |",
            f"| BG/NBD fit | {result['bgnbd_fit_s']:.2f} |",
            f"| Gamma-Gamma fit | {result['gamma_gamma_fit_s']:.2f} |",
            f"| model fit, total | **{total:.2f}** |",
            f"| scoring every customer (P(alive), 90-day purchases, 12-month CLV) | "
            f"{result['score_s']:.2f} |",
            "",
            f"Model fit {total:.2f} s (target < {TARGET_S:.0f} s: {met}). Fitted: r = {bg['r']}, "
            f"alpha = {bg['alpha']}, a = {bg['a']}, b = {bg['b']}; p = {gg['p']}, "
            f"q = {gg['q']}, v = {gg['v']} (simulated with 0.243, 4.414, 0.793, 2.426; "
            "6.25, 3.74, 15.44; days merge same-day purchases).",
        ]
    )


def run(customers: int, write: bool) -> None:
    result = measure(customers)
    print(json.dumps(result), flush=True)
    if write:
        write_section("model-fit", section(result))


def main() -> None:
    run(CUSTOMERS, write=True)


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    cli.add_argument("--customers", type=int, default=CUSTOMERS)
    cli.add_argument("--write", action="store_true", help="write the RESULTS.md section")
    args = cli.parse_args()
    run(args.customers, args.write)
