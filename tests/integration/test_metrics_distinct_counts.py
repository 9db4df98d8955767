"""Exact distinct counts on real Postgres, through the write path: the handler numbers the
customers (two replicas at once, over the same new ids) and ORs their numbers into the minute,
hour and day bitmaps; windows over any mix of grains count exactly, well past the 1,024 ids
the old sketches kept exactly."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text

from clm_infra.db import create_engine
from clm_metrics import distinct, service
from clm_metrics.closed_days import ClosedDayCache
from clm_metrics.formulas import compute_kpis
from clm_metrics.handler import LifecycleHandler
from clm_metrics.members import DistinctKey
from clm_metrics.repository import bucket_writes, rows
from tests.records import unkeyed

NOW = datetime(2026, 11, 23, 12, 34, tzinfo=UTC)
DAY_1 = datetime(2026, 11, 20, 9, 15, tzinfo=UTC)
DAY_2 = datetime(2026, 11, 21, 16, 40, tzinfo=UTC)


async def test_distinct_visitors_are_exact_past_the_old_sketch_limit(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=2)

    async def visit(at: datetime, ids: set[str], source: str = "shop") -> None:
        async with engine.begin() as conn:
            key = DistinctKey(at, "visitors", source, "email")
            await bucket_writes.add_counts(conn, {}, [(key, who) for who in sorted(ids)])

    async def visitors(start: datetime, end: datetime, source: str | None = None) -> int:
        inputs = await service.window_inputs(engine, start, end, NOW, source=source)
        return inputs.distinct["visitors"] or 0

    async def day_row(at: datetime) -> set[str]:
        """The ids in the day's bitmap over every source and channel."""
        async with engine.connect() as conn:
            blob = await conn.scalar(
                text(
                    "SELECT members FROM kpi_distinct WHERE grain = 'day' AND bucket_start = "
                    "date_trunc('day', CAST(:b AS timestamptz)) AND metric = 'visitors' "
                    "AND source = :any AND channel = :any"
                ),
                {"b": at, "any": rows.ANY},
            )
            numbered = await conn.execute(
                text("SELECT customer_id, number FROM metrics_customer_numbers")
            )
            who = {number: customer for customer, number in numbered}
        return {who[n] for n in distinct.loads(blob)}

    try:
        first = {f"v{i}" for i in range(700)}
        second = {f"v{i}" for i in range(670, 970)}  # 30 seen in the first
        await visit(DAY_1, first)
        await visit(DAY_1 + timedelta(minutes=1), second, source="app")
        day_1 = (
            DAY_1.replace(hour=0, minute=0),
            DAY_1.replace(hour=0, minute=0) + timedelta(days=1),
        )
        assert await visitors(*day_1) == 970  # over two sources and two minutes
        assert await visitors(*day_1, source="shop") == 700

        await visit(DAY_1, {f"v{i}" for i in range(950, 1100)})  # 130 new: 1,100 that day
        assert await day_row(DAY_1) == {f"v{i}" for i in range(1100)}
        assert await visitors(*day_1) == 1100

        await visit(DAY_2, {f"w{i}" for i in range(200)} | {f"v{i}" for i in range(100)})
        assert await visitors(NOW - timedelta(days=7), NOW) == 1300
        assert await visitors(DAY_2 - timedelta(hours=1), DAY_2 + timedelta(hours=1)) == 300
    finally:
        await engine.dispose()


def purchase(n: int, who: str, at: datetime, source: str) -> dict[str, Any]:
    return {
        "schema": "clm.lifecycle.v1",
        "record_id": f"purchase-{n}",
        "event": {
            "type": "purchase",
            "source": source,
            "channel": "email",
            "customer_id": who,
            "occurred_at": at.isoformat(),
            "properties": {"order_id": f"o{n}", "amount": "10.00", "currency": "USD"},
        },
        "customer": {"customer_id": who, "first_source": source, "first_channel": "email"},
        "first_purchase": False,
        "repeat_purchase": False,
        "reactivation": False,
        "stage_before": "conversion",
        "stage_after": "conversion",
    }


async def test_purchase_kpis_of_1500_customers_equal_the_exact_computation(
    database_url: str,
) -> None:
    """1,500 customers with 1 to 4 orders each over ten days (some twice in one minute, some
    across days, some before the window), written in shuffled batches by two handlers at once
    (two replicas numbering the same new customers): purchasing customers, purchase frequency
    and repeat purchase rate of several windows equal a brute-force count of the orders."""
    rng = random.Random(29)
    orders: list[tuple[str, datetime, str]] = []
    for c in range(1500):
        first = NOW - timedelta(days=10) + timedelta(minutes=rng.randrange(10 * 24 * 60))
        for k in range(1 + c % 4):
            gap = timedelta(0) if c % 7 == 0 else timedelta(minutes=rng.randrange(5 * 24 * 60))
            at = min(first + k * gap, NOW - timedelta(minutes=1))
            orders.append((f"c{c}", at, rng.choice(["shop", "app"])))
    docs = [purchase(n, who, at, source) for n, (who, at, source) in enumerate(orders)]
    rng.shuffle(docs)

    engine = create_engine(database_url, pool_size=4)
    try:
        replicas = [LifecycleHandler(), LifecycleHandler()]

        async def consume(handler: LifecycleHandler, part: list[dict[str, Any]]) -> None:
            for i in range(0, len(part), 200):
                async with engine.begin() as conn:
                    await handler(conn, unkeyed(part[i : i + 200]))

        await asyncio.gather(*(consume(h, docs[i::2]) for i, h in enumerate(replicas)))
        # a redelivered batch is not counted twice
        async with engine.begin() as conn:
            await replicas[0](conn, unkeyed(docs[:50]))

        async with engine.connect() as conn:
            numbers = [
                n
                for (n,) in await conn.execute(text("SELECT number FROM metrics_customer_numbers"))
            ]
        assert len(numbers) == len(set(numbers)) == 1500

        for start, end, source in [
            (NOW - timedelta(days=30), NOW, None),
            (NOW - timedelta(days=4, hours=5, minutes=17), NOW, None),
            (NOW - timedelta(days=6), NOW - timedelta(days=2, minutes=3), "shop"),
        ]:
            inputs = await service.window_inputs(engine, start, end, NOW, source=source)
            got = compute_kpis(inputs, reporting_currency="USD")
            count: dict[str, int] = {}
            for who, at, src in orders:
                if start <= at < end and source in (None, src):
                    count[who] = count.get(who, 0) + 1
            repeaters = sum(1 for n in count.values() if n >= 2)
            assert len(count) > 1024 or source is not None
            assert got["purchasing_customers"] == len(count)
            assert inputs.distinct["repeat_purchasers"] == repeaters
            assert got["purchases"] == sum(count.values())
            frequency = Decimal(sum(count.values())) / len(count)
            assert got["purchase_frequency"] == str(frequency.quantize(Decimal("0.0001")))
            rate = Decimal(repeaters) / len(count)
            assert got["repeat_purchase_rate"] == str(rate.quantize(Decimal("0.0001")))
    finally:
        await engine.dispose()


def visit(n: int, who: str, at: datetime) -> dict[str, Any]:
    doc = purchase(n, who, at, "shop")
    doc["record_id"] = f"visit-{n}"
    doc["event"] = {**doc["event"], "type": "site_visit", "properties": {}}
    return doc


async def test_an_erased_customer_leaves_and_a_merged_profile_moves_to_its_survivor(
    database_url: str,
) -> None:
    """Visits and orders over three days; then ``anon-1`` is merged into ``c1`` (one order
    each on day 2: together two, a repeat purchaser), ``c2`` is erased and ``c3`` anonymised.
    Every window (through the closed-day cache, which the rewrite invalidates) counts what the
    relabelled events would: the erased customer nowhere, the merged profile as its
    survivor; the ids that left are gone from the numbers table."""
    day = [NOW - timedelta(days=3 - d, hours=2) for d in range(3)]
    events: list[tuple[str, str, datetime]] = [
        ("visit", "anon-1", day[0]),
        ("visit", "c1", day[0]),
        ("visit", "c2", day[0]),
        ("purchase", "anon-1", day[1]),
        ("purchase", "c1", day[1] + timedelta(minutes=5)),
        ("purchase", "c2", day[1]),
        ("purchase", "c2", day[2]),
        ("purchase", "c3", day[2]),
        ("visit", "c3", day[2]),
    ]
    docs = [
        (visit if kind == "visit" else purchase)(
            n, who, at, *(() if kind == "visit" else ("shop",))
        )
        for n, (kind, who, at) in enumerate(events)
    ]
    engine = create_engine(database_url, pool_size=2)
    cache = ClosedDayCache()
    windows = [
        (NOW - timedelta(days=7), NOW),
        (day[1] - timedelta(hours=1), NOW),
        (day[2] - timedelta(minutes=30), NOW),
    ]

    async def counts() -> list[dict[str, int | None]]:
        out = []
        for start, end in windows:
            cached = await service.window_inputs(engine, start, end, NOW, cache=cache)
            fresh = await service.window_inputs(engine, start, end, NOW)
            assert cached.distinct == fresh.distinct
            out.append(dict(fresh.distinct))
        return out

    def truth(relabel: dict[str, str | None]) -> list[dict[str, int]]:
        out = []
        for start, end in windows:
            seen = [(k, relabel.get(w, w), at) for k, w, at in events if start <= at < end]
            orders: dict[str | None, int] = {}
            for k, who, _ in seen:
                if k == "purchase" and who is not None:
                    orders[who] = orders.get(who, 0) + 1
            out.append(
                {
                    "visitors": len({w for k, w, _ in seen if k == "visit" and w is not None}),
                    "purchasers": len(orders),
                    "repeat_purchasers": sum(1 for n in orders.values() if n >= 2),
                }
            )
        return out

    try:
        handler = LifecycleHandler()
        async with engine.begin() as conn:
            await handler(conn, unkeyed(docs))
        assert await counts() == truth({})
        leaving = [
            {
                "schema": "clm.lifecycle.v1",
                "kind": "identity_merge",
                "record_id": "identity_merge:anon-1>c1",
                "customer_id": "anon-1",
                "merged_into": "c1",
                "event": None,
                "customer": None,
                "stage_before": "reach",
                "stage_after": None,
            },
            {
                "schema": "clm.lifecycle.v1",
                "kind": "erasure",
                "record_id": "erasure:x",
                "customer_id": "c2",
                "mode": "erase",
                "event": None,
                "customer": None,
                "stage_before": "conversion",
                "stage_after": None,
            },
            {
                "schema": "clm.lifecycle.v1",
                "kind": "erasure",
                "record_id": "erasure:y",
                "customer_id": "c3",
                "mode": "anonymise",
                "pseudonym": "p-3",
                "event": None,
                "customer": None,
                "stage_before": "conversion",
                "stage_after": "conversion",
            },
        ]
        async with engine.begin() as conn:
            await handler(conn, unkeyed(leaving))
        want = truth({"anon-1": "c1", "c2": None})
        assert want != truth({})  # the relabelling changes every window's counts
        assert await counts() == want
        async with engine.connect() as conn:
            ids = {
                w
                for (w,) in await conn.execute(
                    text("SELECT customer_id FROM metrics_customer_numbers")
                )
            }
        assert ids == {"c1", "p-3"}
        # the same records redelivered change nothing
        async with engine.begin() as conn:
            await handler(conn, unkeyed(leaving))
        assert await counts() == want
    finally:
        await engine.dispose()
