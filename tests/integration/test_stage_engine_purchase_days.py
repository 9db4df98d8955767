"""The purchase-day facts through the real engine (Kafka in, Postgres out, the read API): one
transaction per UTC day, late purchases on earlier days, currencies, and merges that fold
both profiles' purchases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain.kpis import exact_money
from clm_infra.schema import customers
from clm_infra.settings import CommonSettings
from tests.factories import event_doc
from tests.integration.apps import read_customer
from tests.integration.conftest import eventually, send_events
from tests.keys import ADMIN

# recent enough that nobody is inactive by the real clock (the app's own sweeper runs too)
DAY0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=20)
PLUS5 = timezone(timedelta(hours=5))


def at(days: int, hours: float = 12, tz: timezone = UTC) -> str:
    return (DAY0 + timedelta(days=days, hours=hours)).astimezone(tz).isoformat()


def purchase(cid: str, eid: str, when: str, amount: str, currency: str = "EUR") -> dict[str, Any]:
    return event_doc(
        "purchase",
        customer_id=cid,
        event_id=eid,
        occurred_at=when,
        amount=amount,
        currency=currency,
        order_id=f"o-{eid}",
    )


async def facts_after(
    client: httpx.AsyncClient, db: AsyncEngine, cid: str, events: int
) -> tuple[Any, ...]:
    """Once ``cid`` has ``events`` events: its facts as the API shows them, after checking the
    stored row holds the same."""

    async def probe() -> dict[str, Any] | None:
        c = await read_customer(client, cid)
        return c if c and c["events"] == events else None

    doc = await eventually(probe)
    async with db.connect() as conn:
        row = (
            await conn.execute(
                select(
                    customers.c.purchase_days,
                    customers.c.repeat_spend,
                    customers.c.purchase_currency,
                ).where(customers.c.customer_id == cid)
            )
        ).one()
    shown = (doc["purchase_days"], doc["repeat_spend"], doc["purchase_currency"])
    assert shown == (row.purchase_days, exact_money(row.repeat_spend), row[2])
    return shown


async def test_purchases_on_one_utc_day_are_one_and_a_late_one_refolds(
    client: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine
) -> None:
    await send_events(
        common,
        purchase("pd-1", "p1", at(2, 23.5), "10.00"),
        purchase("pd-1", "p2", at(2, 23.75, PLUS5), "5.00"),  # 04:45 next day at +05:00
        purchase("pd-1", "p3", at(3, 0.25), "7.50"),
    )
    assert await facts_after(client, db, "pd-1", 3) == (2, "7.50", "EUR")
    await send_events(common, purchase("pd-1", "p0", at(1), "4.00"))  # late, an earlier day
    assert await facts_after(client, db, "pd-1", 4) == (3, "22.50", "EUR")
    await send_events(common, purchase("pd-1", "p4", at(3, 1), "1.0001", "USD"))
    assert await facts_after(client, db, "pd-1", 5) == (3, "23.5001", "*")


async def test_a_customer_without_purchases_has_none(
    client: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine
) -> None:
    await send_events(common, event_doc("site_visit", customer_id="pd-0", occurred_at=at(1)))
    assert await facts_after(client, db, "pd-0", 1) == (0, "0.00", None)


async def test_an_explicit_merge_folds_both_customers_purchase_days(
    client: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine
) -> None:
    await send_events(
        common,
        purchase("pm-a", "ma", at(1, 9), "10"),
        purchase("pm-b", "mb1", at(1, 18), "5"),
        purchase("pm-b", "mb2", at(4), "8"),
    )
    assert await facts_after(client, db, "pm-a", 1) == (1, "0.00", "EUR")
    assert await facts_after(client, db, "pm-b", 2) == (2, "8.00", "EUR")
    merged = await client.post("/v1/customers/pm-a/merge", json={"from": "pm-b"}, headers=ADMIN)
    assert merged.status_code == 200, merged.text
    customer = merged.json()["customer"]
    assert (customer["purchase_days"], customer["repeat_spend"]) == (2, "8.00")
    assert await facts_after(client, db, "pm-a", 3) == (2, "8.00", "EUR")


async def test_an_identity_merge_folds_the_anonymous_purchases(
    client: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine
) -> None:
    anon = purchase("x", "ia", at(1), "3", "GBP")
    del anon["customer_id"]
    anon["anonymous_id"] = "anon-pd"
    await send_events(common, anon)
    assert await facts_after(client, db, "anon-pd", 1) == (1, "0.00", "GBP")
    identify = event_doc("identify", customer_id="pd-known", event_id="ii", occurred_at=at(2))
    identify["anonymous_id"] = "anon-pd"
    await send_events(common, identify, purchase("pd-known", "ib", at(2, 13), "4", "GBP"))
    assert await facts_after(client, db, "pd-known", 3) == (2, "4.00", "GBP")
