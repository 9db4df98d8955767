"""Distinct-count KPIs are exact at real size (issue 29): a CDNOW-like history of 21,000
customers and over 60,000 orders over 18 months, plus site visits (customers visiting before
some orders, anonymous visitors who never buy), counted by the real metrics service — its Kafka
consumer on a real ``clm.lifecycle.v1`` topic, writing real Postgres, read through its KPI API —
and compared with ``COUNT(DISTINCT …)`` over the raw rows in the same Postgres: unique visitors,
purchasing customers, purchase frequency and repeat purchase rate equal (the exact ratios
rounded as the API rounds them), for the whole range, a rolling and a calendar month, a day of
day rows and a day of minute rows, ranges whose edges cut through customers' orders (at minute
and at hour grain), each unfiltered, by source and by channel.

The orders are a generated CSV of transactions read by ``clm simulate --csv``'s own parser and
turned into events by it (:mod:`clm_simulator.transactions`), dated like CDNOW's log: a
first-purchase cohort of twelve weeks, half the customers ordering again over the following
months, four rows in five a date without a time (so a day's midnight bucket holds hundreds of
orders and customers ordering twice in it), the others at a second of the day.

The records are the stage engine's (its reducer and its ``lifecycle_record``, as its relay
publishes them), produced on the topic by the test, rather than the events through the
engine's own consumer: on this shared 2-core machine the engine's consumer, outbox and relay
in front doubled the run (4 min 48 s for a first, larger version of this history), and they
decide stages, not which customer a record names; the distinct counts are the metrics
service's work, and the HTTP ingest in front would count nothing differently either.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from clm_infra.settings import CommonSettings
from clm_simulator import transactions
from clm_stage_engine.records import lifecycle_record
from tests.conftest import _plain
from tests.integration.conftest import eventually, produce
from tests.keys import READ
from tests.kpi_truth import replay

CUSTOMERS = 21_000
ANONYMOUS = 2_500
SPAN = timedelta(days=546)  # CDNOW: January 1997 to June 1998
COHORT = timedelta(days=84)  # every customer's first order in the first twelve weeks
#: (source, channel) of an order or visit, with its weight.
ROUTES = {("web", "organic"): 5, ("web", "email"): 3, ("phone", "email"): 2, ("phone", "direct"): 1}
RATE = Decimal("0.0001")  # the API's 4 places (banker's rounding, as Decimal's default)


def orders_csv(rng: random.Random, end: datetime) -> str:
    """A CDNOW-like transaction log ending at ``end``: half the customers order once, the
    others again and again, a gap of about two months between orders."""
    start = end - SPAN
    rows = ["customer_id,date,amount"]
    for n in range(CUSTOMERS):
        at = start + timedelta(minutes=rng.randrange(int(COHORT.total_seconds() // 60)))
        more = 0 if rng.random() < 0.5 else 1 + int(rng.expovariate(1 / 3.9))
        for k in range(1 + more):
            if k:
                same_minute = rng.random() < 0.03
                gap = timedelta(0) if same_minute else timedelta(days=rng.expovariate(1 / 55))
                at = at + gap
            if at >= end:
                break
            when = f"{at:%Y-%m-%d}" if rng.random() < 0.8 else f"{at:%Y-%m-%d %H:%M:%S}"
            rows.append(f"c{n:05d},{when},{rng.randint(100, 30000) / 100}")
    return "\n".join(rows) + "\n"


def routed(rng: random.Random) -> tuple[str, str]:
    return rng.choices(list(ROUTES), weights=list(ROUTES.values()))[0]


def history(seed: int, end: datetime) -> list[dict[str, Any]]:
    """Purchase events (the CSV through ``clm simulate --csv``'s reader) and site visits:
    before some orders one to three visits that day; anonymous visitors at any time."""
    rng = random.Random(seed)
    rows = transactions.parse_transactions(orders_csv(rng, end), where="cdnow.csv")
    by_route: dict[tuple[str, str], list[transactions.Transaction]] = {}
    for row in rows:
        by_route.setdefault(routed(rng), []).append(row)
    docs = [
        doc
        for (source, channel), part in sorted(by_route.items())
        for doc in transactions.purchase_events(
            part, prefix=f"cdnow-{source}-{channel}", source=source, channel=channel
        )
    ]
    serial = 0

    def visit(who: dict[str, str], at: datetime) -> dict[str, Any]:
        nonlocal serial
        serial += 1
        source, channel = routed(rng)
        return {
            "event_id": f"visit-{serial}",
            "type": "site_visit",
            "occurred_at": at.isoformat(),
            "source": source,
            "channel": channel,
            "properties": {"url": "https://cdnow.example/"},
            **who,
        }

    for row in rows:
        if rng.random() < 0.1:
            for _ in range(rng.randint(1, 3)):
                before = timedelta(minutes=rng.randint(0, 600))
                docs.append(visit({"customer_id": row.customer_id}, row.at - before))
    for n in range(ANONYMOUS):
        at = end - SPAN + timedelta(minutes=rng.randrange(int(SPAN.total_seconds() // 60)))
        for _ in range(rng.randint(1, 3)):
            docs.append(visit({"anonymous_id": f"anon-{n:05d}"}, min(at, end)))
            at += timedelta(hours=rng.randint(1, 24 * 20))
    return docs


async def load_truth(database_url: str, docs: list[dict[str, Any]]) -> asyncpg.Connection:
    """The raw events as rows of a temporary table, on a connection of their own."""
    conn = await asyncpg.connect(_plain(database_url))
    await conn.execute(
        "CREATE TEMPORARY TABLE raw_events "
        "(kind text, who text, at timestamptz, source text, channel text)"
    )
    await conn.copy_records_to_table(
        "raw_events",
        records=[
            (
                d["type"],
                d.get("customer_id") or d["anonymous_id"],
                datetime.fromisoformat(d["occurred_at"]),
                d["source"],
                d["channel"],
            )
            for d in docs
        ],
    )
    return conn


TRUTH = """
WITH picked AS (
    SELECT kind, who FROM raw_events
    WHERE at >= $1 AND at < $2
      AND ($3::text IS NULL OR source = $3) AND ($4::text IS NULL OR channel = $4)
), orders AS (
    SELECT who, count(*) AS n FROM picked WHERE kind = 'purchase' GROUP BY who
)
SELECT
    (SELECT count(*) FROM picked WHERE kind = 'site_visit') AS site_visits,
    (SELECT count(DISTINCT who) FROM picked WHERE kind = 'site_visit') AS unique_visitors,
    (SELECT coalesce(sum(n), 0)::bigint FROM orders) AS purchases,
    (SELECT count(*) FROM orders) AS purchasing_customers,
    (SELECT count(*) FROM orders WHERE n >= 2) AS repeat_purchasers
"""


def ratio(numerator: int, denominator: int) -> str | None:
    if denominator == 0:
        return None
    return str((Decimal(numerator) / Decimal(denominator)).quantize(RATE))


async def exact(
    conn: asyncpg.Connection,
    start: datetime,
    end: datetime,
    source: str | None,
    channel: str | None,
) -> dict[str, Any]:
    row = await conn.fetchrow(TRUTH, start, end, source, channel)
    assert row is not None
    buyers = row["purchasing_customers"]
    return {
        "site_visits": row["site_visits"],
        "unique_visitors": row["unique_visitors"],
        "purchases": row["purchases"],
        "purchasing_customers": buyers,
        "purchase_frequency": ratio(row["purchases"], buyers),
        "repeat_purchase_rate": ratio(row["repeat_purchasers"], buyers),
    }


async def split_customers(conn: asyncpg.Connection, start: datetime, end: datetime) -> int:
    """Customers with orders both inside ``[start, end)`` and outside it."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM (SELECT who FROM raw_events WHERE kind = 'purchase' GROUP BY who "
        "HAVING bool_or(at >= $1 AND at < $2) AND bool_or(at < $1 OR at >= $2)) AS split",
        start,
        end,
    )
    return count


def span(start: datetime, end: datetime) -> dict[str, str]:
    return {"from": start.isoformat(), "to": end.isoformat()}


@dataclass(frozen=True)
class History:
    docs: list[dict[str, Any]]
    #: The stage engine's lifecycle records of the events, keyed as its relay keys them.
    records: list[tuple[bytes, bytes]]


@pytest.fixture
def clm_env(clm_env: dict[str, str]) -> dict[str, str]:
    """The service's settings, its batches of up to 5,000 records (1,000 by default): a replayed
    backlog counted in about a quarter less time here."""
    return {**clm_env, "CLM_METRICS_BATCH_RECORDS": "5000"}


@pytest.fixture
def cdnow() -> History:
    """The history, ending a minute before today (UTC) began, and its lifecycle records: built
    before the metrics service starts (a running service would wait on this CPU work)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    docs = history(1997, today - timedelta(minutes=1))
    records = [
        (
            str(step.event.customer_id or step.event.anonymous_id).encode(),
            lifecycle_record(step.event, step.before, step.applied),
        )
        for step in replay(docs, now=today)
    ]
    return History(docs, records)


async def test_distinct_kpis_of_a_real_size_history_equal_count_distinct(
    cdnow: History, metrics_app: httpx.AsyncClient, common: CommonSettings
) -> None:
    docs = cdnow.docs
    assert sum(1 for d in docs if d["type"] == "purchase") >= 60_000
    assert len({d["customer_id"] for d in docs if d["type"] == "purchase"}) >= 20_000
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    first = today - SPAN

    await produce(common.kafka.bootstrap, common.topics.lifecycle, cdnow.records)
    truth = await load_truth(common.database.url, docs)
    try:
        everything = span(first - timedelta(days=1), today + timedelta(days=1))

        async def all_counted() -> int | None:  # cheaper than a KPI read of 18 months
            applied: int = await truth.fetchval("SELECT count(*) FROM metrics_processed")
            return applied if applied == len(cdnow.records) else None

        await eventually(all_counted, timeout=300, every=1.0)

        cohort_day = first + timedelta(days=40)
        month = (first + timedelta(days=62)).replace(day=1)
        # (range, whether it cuts through many customers' orders with repeaters inside)
        ranges: list[tuple[dict[str, str], bool]] = [
            (everything, False),
            ({"window": "30d"}, False),  # rolling: the closed days' cached sets
            (span(month, (month + timedelta(days=32)).replace(day=1)), True),  # day rows
            (span(cohort_day, cohort_day + timedelta(days=1)), True),  # one day row
            (span(today - timedelta(days=20), today - timedelta(days=19)), False),  # minutes
            (  # odd minutes at both edges: minute rows
                span(
                    today - timedelta(days=61, minutes=-797),
                    today - timedelta(days=3, minutes=-303),
                ),
                True,
            ),
            (  # hour rows: the API widens the edges to their hours
                span(
                    today - timedelta(days=300, minutes=-437),
                    today - timedelta(days=150, minutes=-1001),
                ),
                True,
            ),
        ]
        filters: list[dict[str, str]] = [{}, {"source": "web"}, {"channel": "email"}]
        for asked, cuts in ranges:
            for only in filters:
                body = (
                    await metrics_app.get("/v1/kpis", params={**asked, **only}, headers=READ)
                ).json()
                start, stop = (
                    datetime.fromisoformat(body["from"]),
                    datetime.fromisoformat(body["to"]),
                )
                want = await exact(truth, start, stop, only.get("source"), only.get("channel"))
                assert {k: body[k] for k in want} == want, (asked, only)
                # not a comparison of empty sets
                assert want["purchasing_customers"], (asked, only)
                assert want["unique_visitors"], (asked, only)
                if asked is everything and not only:
                    assert body["events"] == len(docs)
                    assert want["purchasing_customers"] >= 20_000
                    assert want["unique_visitors"] > ANONYMOUS  # customers visit too
                if cuts and not only:
                    assert want["repeat_purchase_rate"] not in (None, "0.0000"), asked
                    assert await split_customers(truth, start, stop) > 100, asked
    finally:
        await truth.close()
