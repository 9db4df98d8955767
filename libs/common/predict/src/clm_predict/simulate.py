"""A seeded simulator of the BG/NBD and Gamma-Gamma models, for tests and benchmarks.

Each customer makes a first purchase at time 0 and is observed until their age T. While
active they buy at rate λ ~ Gamma(r, α); after each purchase they drop out with probability
p ~ Beta(a, b) (never after the first). Each transaction's value is Gamma(p, ν), with
ν ~ Gamma(q, v) per customer (the Gamma-Gamma p, not the BG/NBD one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from clm_predict.bgnbd import BgNbdParams
from clm_predict.gamma_gamma import GammaGammaParams
from clm_predict.rfm import WEEK, RfmSummary

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Simulated:
    """Every transaction (the first ones included), by customer index, in time order per
    customer; times are from the customer's first purchase, in the model's time unit."""

    customer: IntArray
    time: FloatArray
    amount: FloatArray
    ages: FloatArray


def simulate(bg: BgNbdParams, gg: GammaGammaParams, ages: npt.ArrayLike, seed: int) -> Simulated:
    rng = np.random.default_rng(seed)
    age = np.asarray(ages, dtype=np.float64)
    n = len(age)
    rate = rng.gamma(bg.r, 1.0 / bg.alpha, n)
    drop = rng.beta(bg.a, bg.b, n)
    nu = rng.gamma(gg.q, 1.0 / gg.v, n)
    customers = [np.arange(n)]
    times = [np.zeros(n)]
    active = np.arange(n)
    now = np.zeros(n)
    while len(active):
        # the next purchase comes after Exp(λ); after a repeat purchase, drop out with p
        now[active] += rng.exponential(1.0, len(active)) / rate[active]
        active = active[now[active] <= age[active]]
        customers.append(active.copy())
        times.append(now[active].copy())
        active = active[rng.random(len(active)) >= drop[active]]
    customer = np.concatenate(customers)
    time = np.concatenate(times)
    order = np.lexsort((time, customer))
    customer, time = customer[order], time[order]
    amount = rng.gamma(gg.p, 1.0, len(customer)) / nu[customer]
    return Simulated(customer, time, amount, age)


def summary(sim: Simulated, unit_days: float = WEEK) -> RfmSummary:
    """The exact summary of the simulated transactions (continuous times: no day rounding)."""
    n = len(sim.ages)
    counts = np.bincount(sim.customer, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    x = (counts - 1).astype(np.float64)
    recency = sim.time[starts + counts - 1]
    total = np.add.reduceat(sim.amount, starts)
    repeat = total - sim.amount[starts]
    monetary = np.divide(repeat, x, out=np.zeros_like(repeat), where=x > 0)
    return RfmSummary(
        customer_ids=tuple(f"c{i}" for i in range(n)),
        frequency=x,
        recency=recency,
        age=sim.ages.copy(),
        monetary=monetary,
        unit_days=unit_days,
    )
