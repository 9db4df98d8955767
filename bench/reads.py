"""Stage-by-customer read latency: ``GET /v1/customers/{id}`` in rounds, the median of the p99s.

One round is ``reads`` sequential random reads on one keep-alive connection. A single round's
p99 is its ~10th-worst read, so one scheduler hiccup on a shared 2-core box moves it by
milliseconds; the median over several rounds is the figure to compare run to run (every
round's p99 is kept, to show the spread).
"""

from __future__ import annotations

import base64
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import numpy as np

from bench.http import Conn
from clm_predict.bgnbd import BgNbdParams
from clm_predict.gamma_gamma import GammaGammaParams
from clm_predict.simulate import simulate, summary


@dataclass(frozen=True)
class Reads:
    """Rounds of reads: each round's p50 and p99 (ms), and how many reads each made."""

    p50s: list[float]
    p99s: list[float]
    counts: list[int]

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.p50s)

    @property
    def p99_ms(self) -> float:
        """The median of the rounds' p99s."""
        return statistics.median(self.p99s)

    def spread(self) -> str:
        """Every round's p99, e.g. ``3.9 / 4.2 / 6.8``."""
        return " / ".join(f"{p:.1f}" for p in self.p99s)


def percentile(sorted_ms: list[float], q: float) -> float:
    """The ``q`` quantile (0 < q ≤ 1) of sorted values, nearest rank."""
    return sorted_ms[max(0, int(len(sorted_ms) * q) - 1)]


def customer_get(customer_id: str, token: str) -> bytes:
    return (
        f"GET /v1/customers/{customer_id} HTTP/1.1\r\nHost: engine\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()


def fill_ids(customers: int) -> Callable[[], str]:
    """Random ids of the ``fill-1`` … ``fill-<customers>`` rows :func:`fill_customers` adds."""
    return lambda: f"fill-{random.randint(1, customers)}"


FILL_SQL = """
INSERT INTO customers (customer_id, stage, stage_entered_at, first_seen_at,
                       last_seen_at, first_source, purchases, revenue)
SELECT 'fill-' || g, 'retention', now(), now(), now(), 'bench', 2, 85.00
FROM generate_series(1, $1) AS g
"""

FILL_COLUMNS = (
    "customer_id", "stage", "stage_entered_at", "first_seen_at", "last_seen_at", "first_source",
    "purchases", "revenue", "converted_at", "last_purchase_at", "purchase_days", "repeat_spend",
    "purchase_currency",
)  # fmt: skip


async def fill_purchasers(conn: asyncpg.Connection, customers: int, seed: int = 7) -> None:
    """``fill-1`` … ``fill-<customers>``: purchase histories drawn from the models (the CDNOW
    parameters, first purchases 1 to 78 weeks ago), as the engine's purchase-day facts: what
    a refit reads and every read scores under :data:`MODEL_SQL`'s version."""
    ages = np.random.default_rng(seed).uniform(1, 78, customers)
    sim = simulate(
        BgNbdParams(0.243, 4.414, 0.793, 2.426), GammaGammaParams(6.25, 3.74, 15.44), ages, seed
    )
    facts = summary(sim)
    x = facts.frequency.astype(np.int64)
    age_days = np.floor(facts.age * 7).astype(np.int64)
    span_days = np.minimum(np.maximum(np.floor(facts.recency * 7).astype(np.int64), x), age_days)
    now = datetime.now(UTC)
    rows = []
    for i in range(customers):
        first = now - timedelta(days=int(age_days[i]))
        spend = Decimal(float(facts.monetary[i] * x[i])).quantize(Decimal("0.01"))
        rows.append(
            (f"fill-{i + 1}", "retention", now, first, now, "bench", int(x[i]) + 1,
             Decimal("85.00"), first, first + timedelta(days=int(span_days[i])),
             int(x[i]) + 1, spend, "EUR")
        )  # fmt: skip
    await conn.copy_records_to_table("customers", records=rows, columns=FILL_COLUMNS)


#: A fitted model version (the CDNOW parameters) for the reads to score with.
MODEL_SQL = """
INSERT INTO model_fits (outcome, trigger, as_of, customers, repeat_customers, log_likelihood,
                        bgnbd, gamma_gamma)
VALUES ('fitted', 'manual', now(), 2357, 946, -9582.4,
        '{"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}',
        '{"EUR": {"p": 6.25, "q": 3.74, "v": 15.44, "customers": 946}}')
"""


def listing_get(after: str, token: str) -> bytes:
    """A page of ``p_alive_lt`` among retention customers, from ``after`` on."""
    cursor = base64.urlsafe_b64encode(after.encode()).decode()
    return (
        f"GET /v1/customers?p_alive_lt=0.3&stage=retention&limit=100&cursor={cursor} HTTP/1.1\r\n"
        f"Host: engine\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()


async def read_rounds(
    port: int,
    token: str,
    ids: Callable[[], str],
    *,
    rounds: int,
    reads: int,
    warmup: int = 200,
    round_s: float | None = None,
    request: Callable[[str, str], bytes] = customer_get,
) -> Reads:
    """``rounds`` rounds of ``reads`` sequential reads of existing customers (each must be 200);
    a round ends early after ``round_s`` seconds (when given: a bench part on a saturated box
    stays within its minutes)."""
    conn = await Conn.open(port)
    p50s, p99s, counts = [], [], []
    try:
        for _ in range(warmup):
            await conn.request(request(ids(), token))
        for _ in range(rounds):
            took: list[float] = []
            deadline = time.perf_counter() + (round_s or float("inf"))
            while len(took) < reads and time.perf_counter() < deadline:
                raw = request(ids(), token)
                started = time.perf_counter()
                status = await conn.request(raw)
                took.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    raise RuntimeError(f"GET /v1/customers answered {status}")
            took.sort()
            counts.append(len(took))
            p50s.append(statistics.median(took))
            p99s.append(percentile(took, 0.99))
    finally:
        conn.close()
    return Reads(p50s, p99s, counts)
