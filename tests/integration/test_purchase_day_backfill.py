"""Migration 0017 on real Postgres: the purchase-day facts of the customers already stored are
computed from their event log exactly as the reducer folds them; a customer whose log lacks
purchases (anonymised) gets what its row proves; downgrading drops the columns."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clm_domain.events import Event, dump_event, parse_event
from clm_domain.lifecycle import CustomerState, Stage, rebuild
from clm_domain.rules import load_rules
from clm_infra.db import create_engine
from tests.conftest import alembic_upgrade
from tests.factories import NOW, event_doc

RULES = load_rules()
DAY0 = datetime(2026, 3, 1, tzinfo=UTC)
BEFORE = "0016_status_views"
FACTS = (
    "SELECT purchase_days, repeat_spend, purchase_currency FROM customers WHERE customer_id = :c"
)


def history(cid: str, rnd: random.Random) -> list[Event]:
    """A customer's events: purchases on a few days (some on one day, some near midnight UTC,
    some written in another offset), in one or two currencies, and visits."""
    events = []
    for n in range(rnd.randint(0, 7)):
        at = DAY0 + timedelta(days=rnd.randint(0, 3), seconds=rnd.choice([0, 59, 43200, 86399]))
        if rnd.random() < 0.3:
            doc = event_doc("site_visit", customer_id=cid, event_id=f"{cid}-v{n}")
        else:
            doc = event_doc(
                "purchase",
                customer_id=cid,
                event_id=f"{cid}-p{n}",
                order_id=f"{cid}-o{n}",
                amount=str(Decimal(rnd.randint(0, 10**6)).scaleb(-4)),
                currency=rnd.choice(["EUR", "EUR", "USD"]),
            )
        offset = timezone(timedelta(hours=rnd.choice([0, 5, -8])))
        doc["occurred_at"] = at.astimezone(offset).isoformat()
        events.append(parse_event(doc, now=NOW))
    return events


def with_nul(payload: bytes) -> bytes:
    """The payload with a \\u0000 in free text (properties may hold one)."""
    doc = orjson.loads(payload)
    doc["properties"]["note"] = "a\u0000b"
    return orjson.dumps(doc)


ROW = text(
    "INSERT INTO customers (customer_id, stage, stage_entered_at, first_seen_at, last_seen_at,"
    " first_source, converted_at, last_purchase_at, purchases, revenue, events,"
    " recent_purchases) VALUES (:customer_id, :stage, :stage_entered_at, :first_seen_at,"
    " :last_seen_at, :first_source, :converted_at, :last_purchase_at, :purchases, :revenue,"
    " :events, :recent_purchases)"
)
LOGGED = text(
    "INSERT INTO customer_events (source, event_id, customer_id, occurred_at, payload)"
    " VALUES (:source, :event_id, :customer_id, :occurred_at, :payload)"
)


async def store(conn: AsyncConnection, state: CustomerState, payloads: list[bytes]) -> None:
    """A customer row as an engine of 0016 wrote it, and its event log."""
    columns = ROW.compile().params
    await conn.execute(
        ROW,
        {
            **{name: getattr(state, name) for name in columns},
            "stage": state.stage.value,
            "recent_purchases": list(state.recent_purchases),
        },
    )
    for payload in payloads:
        doc = orjson.loads(payload)
        await conn.execute(
            LOGGED,
            {
                "source": doc["source"],
                "event_id": doc["event_id"],
                "customer_id": state.customer_id,
                "occurred_at": datetime.fromisoformat(doc["occurred_at"]),
                "payload": payload,
            },
        )


async def test_migration_0017_computes_the_facts_from_the_event_log(bare_database: str) -> None:
    await asyncio.to_thread(alembic_upgrade, bare_database, "upgrade", BEFORE)
    rnd = random.Random(17)
    expected: dict[str, tuple[int, Decimal, str | None]] = {}
    db = create_engine(bare_database, pool_size=1)
    try:
        async with db.begin() as conn:
            for n in range(40):
                cid = f"b-{n}"
                events = history(cid, rnd) or [
                    parse_event(event_doc("signup", customer_id=cid), now=NOW)
                ]
                state = rebuild(cid, events, RULES)
                assert state is not None
                payloads = [dump_event(e) for e in events]
                if n % 5 == 0:  # free text Postgres refuses to unescape must not stop it
                    payloads = [with_nul(p) for p in payloads]
                await store(conn, state, payloads)
                expected[cid] = (state.purchase_days, state.repeat_spend, state.purchase_currency)
            await _store_anonymised(conn)
        await db.dispose()
        await asyncio.to_thread(alembic_upgrade, bare_database)
        async with db.connect() as conn:
            for cid, facts in expected.items():
                assert (await conn.execute(text(FACTS), {"c": cid})).one() == facts, cid
            assert (await conn.execute(text(FACTS), {"c": "anon-all"})).one() == (2, 0, None)
            assert (await conn.execute(text(FACTS), {"c": "anon-some"})).one() == (3, 0, None)
        assert any(days > 1 for days, _, _ in expected.values())
        assert any(currency == "*" for _, _, currency in expected.values())
        await _checks_hold(db)
        await db.dispose()
        await asyncio.to_thread(alembic_upgrade, bare_database, "downgrade", BEFORE)
        async with db.connect() as conn:
            left = await conn.execute(
                text(
                    "SELECT count(*) FROM information_schema.columns WHERE table_name ="
                    " 'customers' AND column_name IN ('purchase_days', 'repeat_spend',"
                    " 'purchase_currency')"
                )
            )
            assert left.scalar_one() == 0
    finally:
        await db.dispose()


async def _store_anonymised(conn: AsyncConnection) -> None:
    """Two buyers whose log was dropped (anonymised): one row keeps every purchase time
    (exact), one only the first and the last few (a lower bound)."""
    day = [DAY0 + timedelta(days=d, hours=10) for d in range(8)]
    for cid, purchases, recent in (
        ("anon-all", 3, (day[1], day[3], day[3] + timedelta(hours=1))),
        ("anon-some", 5, (day[5], day[6], day[6] + timedelta(hours=1))),
    ):
        state = CustomerState(
            cid,
            Stage.RETENTION,
            day[0],
            day[0],
            day[7],
            "shop",
            converted_at=day[1],
            last_purchase_at=recent[-1],
            purchases=purchases,
            revenue=Decimal(50),
            recent_purchases=recent,
        )
        await store(conn, state, [])


async def _checks_hold(db: AsyncEngine) -> None:
    for bad in (
        "UPDATE customers SET purchase_days = purchases + 1 WHERE customer_id = 'anon-all'",
        "UPDATE customers SET repeat_spend = -1 WHERE customer_id = 'anon-all'",
        "UPDATE customers SET purchase_currency = 'eur' WHERE customer_id = 'anon-all'",
    ):
        with pytest.raises(IntegrityError, match="ck_customers_"):
            async with db.begin() as conn:
                await conn.execute(text(bad))
