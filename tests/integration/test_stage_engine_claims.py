"""The stage engine's dedupe claims and row versions on real Postgres: an applied event's
event-log row is its claim, events without a customer (or that failed) are claimed in
``processed_events``, a batch that loses a claim to a concurrent transaction rolls back, and
so does one that would write back a customer row someone else wrote since it was read (or
remembered); a visitor's profile and the link that merges it never end up side by side."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain.lifecycle import CustomerState, Stage
from clm_domain.rules import LifecycleRules
from clm_infra.consumer import Conflict
from clm_infra.schema import customer_events, customers, processed_events
from clm_stage_engine import repository
from clm_stage_engine.handler import EventsHandler
from clm_stage_engine.known import LOOKUPS, KnownStates
from clm_stage_engine.repository import ClaimLost, StaleRows
from tests.factories import event_doc
from tests.integration.conftest import wire
from tests.records import Record

HANDLER = EventsHandler("lifecycle", LifecycleRules())


def records(*docs: dict[str, Any]) -> list[Record]:
    return [Record(*wire(doc), offset=n) for n, doc in enumerate(docs)]


async def count(db: AsyncEngine, table: Any, **where: str) -> int:
    query = select(func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    async with db.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def test_customer_events_are_claimed_by_their_log_row_others_in_processed_events(
    db: AsyncEngine,
) -> None:
    batch = records(
        event_doc("purchase", customer_id="claim-1", event_id="c1"),
        event_doc("marketing_spend", customer_id=None, event_id="m1"),
    )
    async with db.begin() as conn:
        assert (await HANDLER(conn, batch)).applied == 2
    assert await count(db, customer_events, event_id="c1") == 1
    assert await count(db, processed_events, event_id="c1") == 0
    assert await count(db, processed_events, event_id="m1") == 1

    async with db.begin() as conn:  # a redelivery of both: nothing new
        assert (await HANDLER(conn, batch)).applied == 0
    assert await count(db, customer_events) == 1
    assert await count(db, processed_events) == 1


async def test_the_event_log_keeps_each_events_json_as_it_came(db: AsyncEngine) -> None:
    """The payloads go to Postgres as slices of one blob: each row gets its own bytes,
    whatever their lengths and characters (and one written by another producer than the
    ingest, with its own spacing, is kept as written)."""
    docs = [
        event_doc("site_visit", customer_id="log-1", event_id="l1", url="https://a.example/"),
        event_doc("review", customer_id="log-2", event_id="l2", rating=5, text='très bon 👍 "ok"'),
        event_doc("purchase", customer_id="log-3", event_id="l3"),
    ]
    batch = records(*docs)
    spaced = b'  { "event_id": "l4", "type": "signup", "customer_id": "log-4",\n'
    spaced += b' "occurred_at": "2026-11-23T11:00:00Z", "source": "shop", "properties": {} }\n'
    batch.append(Record(b"log-4", spaced, offset=len(batch)))
    async with db.begin() as conn:
        assert (await HANDLER(conn, batch)).applied == 4
    async with db.connect() as conn:
        stored = dict(
            (await conn.execute(select(customer_events.c.event_id, customer_events.c.payload)))
            .tuples()
            .all()
        )
    assert stored == {eid: r.value for eid, r in zip(["l1", "l2", "l3", "l4"], batch, strict=True)}


async def test_a_batch_losing_a_claim_to_a_concurrent_transaction_rolls_back(
    db: AsyncEngine,
) -> None:
    purchase = event_doc("purchase", customer_id="race-1", event_id="r1")
    first = await db.connect()
    await first.begin()
    assert (await HANDLER(first, records(purchase))).applied == 1  # not committed yet

    async def second() -> None:
        async with db.begin() as conn:  # its dedupe read does not see the first's claim
            await HANDLER(conn, records(purchase, event_doc("signup", customer_id="race-2")))

    racing = asyncio.create_task(second())
    await asyncio.sleep(0.5)  # the second's claim waits on the first's row
    assert not racing.done()
    await first.commit()
    await first.close()
    with pytest.raises(ClaimLost):
        await racing
    assert await count(db, customer_events) == 1
    assert await count(db, customers, customer_id="race-2") == 0  # rolled back whole
    async with db.connect() as conn:
        purchases = (
            await conn.execute(
                select(customers.c.purchases).where(customers.c.customer_id == "race-1")
            )
        ).scalar_one()
    assert purchases == 1


async def test_an_anonymised_customers_events_stay_claimed(db: AsyncEngine) -> None:
    batch = records(
        event_doc("site_visit", customer_id="anon-me", event_id="a1"),
        event_doc("purchase", customer_id="anon-me", event_id="a2"),
    )
    async with db.begin() as conn:
        assert (await HANDLER(conn, batch)).applied == 2
    async with db.begin() as conn:
        assert await repository.anonymise_customer(conn, "anon-me", "pseudo-1")
    assert await count(db, customer_events) == 0
    assert await count(db, processed_events, customer_id="pseudo-1") == 2

    async with db.begin() as conn:  # a redelivery does not bring the customer back
        assert (await HANDLER(conn, batch)).applied == 0
    assert await count(db, customers, customer_id="anon-me") == 0


# The rows a handler wrote are kept in memory (clm_stage_engine.known) once the batch
# committed, and a batch writes each customer row back only if still at the version it
# read or took from memory: the cases where someone else wrote the row in between.


def remembering() -> EventsHandler:
    return EventsHandler("lifecycle", LifecycleRules(), KnownStates(100))


async def commit(db: AsyncEngine, handler: EventsHandler, batch: list[Record]) -> int:
    async with db.begin() as conn:
        result = await handler(conn, batch)
    assert result.committed is not None
    result.committed()  # what the consumer does once the transaction committed
    return result.applied


async def customer(db: AsyncEngine, customer_id: str) -> Any:
    async with db.connect() as conn:
        return (
            await conn.execute(select(customers).where(customers.c.customer_id == customer_id))
        ).one_or_none()


async def test_a_known_customer_written_by_someone_else_is_read_again(db: AsyncEngine) -> None:
    handler = remembering()
    await commit(db, handler, records(event_doc("purchase", customer_id="kn-1")))
    hits = LOOKUPS.labels("hit")._value.get()
    async with db.begin() as conn:  # another writer (the API, the sweeper, another replica)
        await conn.execute(
            update(customers).where(customers.c.customer_id == "kn-1").values(tickets_opened=5)
        )
    second = records(event_doc("purchase", customer_id="kn-1", occurred_at="2026-11-24T11:00:00Z"))
    with pytest.raises(StaleRows):
        async with db.begin() as conn:
            await handler(conn, second)
    assert LOOKUPS.labels("hit")._value.get() == hits + 1  # it was taken from memory
    assert len(handler.known) == 0  # and forgotten when it proved stale
    assert await commit(db, handler, second) == 1  # the retry reads the row
    row = await customer(db, "kn-1")
    assert (row.purchases, row.tickets_opened) == (2, 5)  # neither write lost


async def test_a_known_customer_erased_meanwhile_is_not_brought_back(db: AsyncEngine) -> None:
    handler = remembering()
    await commit(
        db,
        handler,
        records(
            event_doc("site_visit", customer_id="kn-2"),
            event_doc("purchase", customer_id="kn-2"),
        ),
    )
    async with db.begin() as conn:
        assert await repository.erase_customer(conn, "kn-2", handler.pseudonyms.tombstone)
    later = records(
        event_doc("site_visit", customer_id="kn-2", occurred_at=datetime.now(UTC).isoformat())
    )
    with pytest.raises(StaleRows):  # the row it remembered is gone
        async with db.begin() as conn:
            await handler(conn, later)
    assert await commit(db, handler, later) == 1
    row = await customer(db, "kn-2")
    assert (row.events, row.purchases, row.stage) == (1, 0, "reach")  # a new profile


async def test_a_customer_inserted_meanwhile_fails_the_batch(db: AsyncEngine) -> None:
    first = await db.connect()
    await first.begin()
    assert (
        await remembering()(first, records(event_doc("site_visit", customer_id="kn-3")))
    ).applied
    signup = records(event_doc("signup", customer_id="kn-3", occurred_at="2026-11-23T12:00:00Z"))

    async def second() -> None:
        async with db.begin() as conn:  # reads no row: the first's insert is not committed
            await remembering()(conn, signup)

    racing = asyncio.create_task(second())
    await asyncio.sleep(0.5)  # its insert waits on the first's row
    assert not racing.done()
    await first.commit()
    await first.close()
    with pytest.raises(StaleRows):
        await racing
    assert await commit(db, remembering(), signup) == 1
    row = await customer(db, "kn-3")
    assert (row.events, row.stage) == (2, "acquisition")


async def test_a_state_goes_through_postgres_unchanged(db: AsyncEngine) -> None:
    """Every field, written by the batch (insert, then update at the version read) and by the
    sweeper's upsert, reads back equal: microseconds, None, empty and full arrays, money."""
    at = datetime(2026, 11, 23, 11, 0, 0, 123456, tzinfo=UTC)
    full = CustomerState(
        "rt-1",
        Stage.LOYALTY,
        at,
        at,
        at + timedelta(days=3),
        "shop",
        None,
        "spring",
        at,
        at + timedelta(seconds=1),
        at + timedelta(days=2),
        3,
        Decimal("1234.5600"),
        1,
        Decimal("0.01"),
        purchase_days=2,
        repeat_spend=Decimal("1000.0001"),
        purchase_currency="*",
        reviews=2,
        review_sum=9,
        last_nps=10,
        events=7,
        last_event_source="shop",
        last_event_id="e7",
        recent_visits=(at, at + timedelta(microseconds=1)),
        recent_purchases=(),
    )
    empty = CustomerState("rt-1", Stage.REACH, at, at, at, "web")
    for state, version in ((empty, None), (full, "read")):
        async with db.begin() as conn:
            if version is not None:
                rows = await repository.read_customers(conn, ["rt-1"])
            await repository.write_batch(
                conn,
                events=[],
                claims=[],
                links=[],
                states=[(state, None if version is None else rows["rt-1"].version)],
                transitions=[],
            )
        assert await repository.read_customer(db, "rt-1") == state
    swept = replace(
        full, stage=Stage.AT_RISK, recent_purchases=(at,), purchase_days=3, purchase_currency="EUR"
    )
    async with db.begin() as conn:
        await repository.upsert_customers(conn, [swept])
    assert await repository.read_customer(db, "rt-1") == swept


async def test_timestamps_far_from_1970_and_other_offsets_come_back_exactly(
    db: AsyncEngine,
) -> None:
    """Timestamps at the ends of Python's range, just before 1970 and at other offsets
    through the batch's write and back, exact to the microsecond."""
    far = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    early = datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    before = datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    offset = datetime(2300, 6, 1, 12, 0, 0, 654321, tzinfo=timezone(timedelta(hours=-7)))
    state = CustomerState(
        "far-1",
        Stage.RETENTION,
        far,
        early,
        far,
        "shop",
        acquired_at=before,
        converted_at=offset,
        last_purchase_at=offset,
        recent_visits=(early, far),
    )
    async with db.begin() as conn:
        await repository.write_batch(
            conn, events=[], claims=[], links=[], states=[(state, None)], transitions=[]
        )
    assert await repository.read_customer(db, "far-1") == state


# An anonymous visitor's profile and the identify that merges it, applied by two lanes at once
# (they are keyed apart, so on different partitions): whichever commits first, the visit ends
# up on the customer, never on a profile of its own beside it.


def anonymous(doc: dict[str, Any], anonymous_id: str) -> dict[str, Any]:
    return {**doc, "anonymous_id": anonymous_id}


async def race(db: AsyncEngine, first: list[Record], second: list[Record]) -> None:
    """``first`` applied and held uncommitted while ``second`` runs; then both commit (a
    batch that has to wait for the other, or retry after it, does)."""
    held = await db.connect()
    await held.begin()
    await HANDLER(held, first)

    async def other() -> None:
        while True:  # as the consumer retries a batch that conflicted with another
            try:
                async with db.begin() as conn:
                    await HANDLER(conn, second)
                return
            except Conflict:
                await asyncio.sleep(0.05)

    racing = asyncio.create_task(other())
    await asyncio.sleep(0.5)
    await held.commit()
    await held.close()
    await asyncio.wait_for(racing, timeout=10)


async def stages(db: AsyncEngine, *ids: str) -> dict[str, str]:
    async with db.connect() as conn:
        rows = await conn.execute(
            select(customers.c.customer_id, customers.c.stage).where(
                customers.c.customer_id.in_(ids)
            )
        )
        return {r.customer_id: r.stage for r in rows}


@pytest.mark.parametrize("visit_first", [True, False], ids=["visit held", "identify held"])
async def test_a_visit_racing_the_identify_of_its_visitor_lands_on_the_customer(
    db: AsyncEngine, visit_first: bool
) -> None:
    visit = records(anonymous(event_doc("site_visit", customer_id=None), "race-anon"))
    identify = records(
        anonymous(
            event_doc("identify", customer_id="race-cust", occurred_at="2026-11-23T11:30:00Z"),
            "race-anon",
        )
    )
    await race(db, *((visit, identify) if visit_first else (identify, visit)))
    assert await stages(db, "race-anon", "race-cust") == {"race-cust": "reach"}
    assert await count(db, customer_events, customer_id="race-cust") == 2


async def test_no_profile_is_inserted_for_an_id_linked_meanwhile(db: AsyncEngine) -> None:
    """A link committed between a batch's lookup and its write (after the batch took the id's
    lock) is seen by the write: no profile beside the customer, the batch retries."""
    async with db.begin() as conn:
        await repository.insert_links(conn, [("late-anon", "late-cust", "e-identify")])
    at = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
    with pytest.raises(StaleRows):
        async with db.begin() as conn:
            await repository.write_batch(
                conn,
                events=[],
                claims=[],
                links=[],
                states=[(CustomerState("late-anon", Stage.REACH, at, at, at, "web"), None)],
                transitions=[],
            )
    assert await stages(db, "late-anon") == {}
