"""Reading personal data back: a customer's events with their personal fields opened (read
token) and the subject-access export (admin key), from events sent through the real ingest
(sealed under the customers' data keys) and applied by the real stage engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_infra.settings import CommonSettings
from clm_ingest.settings import IngestSettings
from tests.factories import event_doc
from tests.integration.conftest import eventually, until_events
from tests.integration.ingest_server import ingest_client
from tests.keys import ADMIN, READ, WRITE

CONTEXT = {"ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (test)"}
TRAITS = {"email": "ada@example.com", "name": "Ada Lovelace"}
ITEMS = [{"sku": "sku-1", "name": "Analytical engine", "quantity": 1}]


def at(minute: int) -> str:
    return f"2026-11-23T10:{minute:02d}:00Z"


@pytest.fixture
async def ingest(common: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with ingest_client(IngestSettings()) as c:
        yield c


async def send(ingest: httpx.AsyncClient, *docs: dict[str, Any]) -> None:
    for doc in docs:
        response = await ingest.post("/v1/events", json=doc, headers=WRITE)
        assert response.status_code == 202, response.text


async def a_customer_with_personal_data(
    ingest: httpx.AsyncClient, client: httpx.AsyncClient
) -> list[dict[str, Any]]:
    """``cust-e``: an anonymous visit (sealed under ``anon-e``'s key) merged in by an
    identify, and a purchase with items; every event with a context. The events sent."""
    visit = event_doc("site_visit", customer_id=None, event_id="v1", occurred_at=at(0))
    visit |= {"anonymous_id": "anon-e", "context": CONTEXT}
    await send(ingest, visit)
    await until_events(client, "anon-e", 1)
    identify = event_doc("identify", customer_id="cust-e", event_id="i1", occurred_at=at(1))
    identify |= {"anonymous_id": "anon-e", "context": CONTEXT}
    identify["properties"] = {"traits": TRAITS}
    purchase = event_doc("purchase", customer_id="cust-e", event_id="p1", occurred_at=at(2))
    purchase |= {"context": CONTEXT}
    purchase["properties"]["items"] = ITEMS
    await send(ingest, identify, purchase)
    await until_events(client, "cust-e", 3)
    return [visit, identify, purchase]


def as_sent(got: dict[str, Any], sent: dict[str, Any]) -> None:
    """``got`` holds every field ``sent`` had, with its value (times compared as instants)."""
    for name, value in sent.items():
        if name == "occurred_at":
            assert got[name].replace("+00:00", "Z") == value
        else:
            assert got[name] == value, name


async def all_events(client: httpx.AsyncClient, cid: str, limit: int) -> list[dict[str, Any]]:
    """Every page of the customer's events, walked with ``next``."""
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        response = await client.get(f"/v1/customers/{cid}/events", params=params, headers=READ)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["events"]) <= limit
        events += page["events"]
        if page["next"] is None:
            return events
        params["after"] = page["next"]


async def test_the_read_token_reads_the_events_opened(
    client: httpx.AsyncClient, common: CommonSettings, ingest: httpx.AsyncClient
) -> None:
    sent = await a_customer_with_personal_data(ingest, client)
    events = await all_events(client, "cust-e", 100)
    assert [e["event_id"] for e in events] == ["v1", "i1", "p1"]
    assert [e["personal"] for e in events] == ["opened"] * 3
    for got, doc in zip(events, sent, strict=True):
        as_sent(got, doc)
        assert "sealed" not in got
    assert events[1]["properties"]["traits"] == TRAITS
    assert events[2]["properties"]["items"] == ITEMS
    assert events[2]["context"] == CONTEXT


async def test_the_export_holds_everything_about_the_customer(
    client: httpx.AsyncClient, common: CommonSettings, ingest: httpx.AsyncClient
) -> None:
    segment = {"name": "buyers", "condition": {"fact": "purchases", "op": "ge", "value": 1}}
    made = await client.post("/v1/segments", json=segment, headers=ADMIN)
    assert made.status_code == 201, made.text
    await a_customer_with_personal_data(ingest, client)
    withdrawn = event_doc("consent", customer_id="cust-e", event_id="c1", occurred_at=at(3))
    withdrawn["properties"] = {"purpose": "marketing", "granted": False}
    await send(ingest, withdrawn)

    async def consent_recorded() -> bool:
        got = (await client.get("/v1/customers/cust-e", headers=READ)).json()
        return got["consent"]["marketing"] is not None

    await eventually(consent_recorded)
    listed = await all_events(client, "cust-e", 100)

    response = await client.get("/v1/customers/cust-e/export", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    disposition = response.headers["content-disposition"]
    assert disposition == 'attachment; filename="customer-cust-e-export.json"'
    doc = response.json()
    assert doc["customer_id"] == "cust-e"
    assert doc["exported_at"]
    customer = (await client.get("/v1/customers/cust-e", headers=READ)).json()
    assert doc["customer"] == customer
    assert doc["customer"]["purchases"] == 1
    assert [s["name"] for s in doc["customer"]["segments"]] == ["buyers"]
    history = (await client.get("/v1/customers/cust-e/history", headers=READ)).json()
    assert doc["history"] == history["transitions"]
    assert [t["to_stage"] for t in doc["history"]][-1] == "conversion"
    assert doc["events"] == listed
    assert [link["anonymous_id"] for link in doc["identity"]] == ["anon-e"]
    assert doc["identity"][0]["data_key"]["created_at"]
    (span,) = doc["segment_history"]
    assert (span["name"], span["left_at"], span["entered_by"]) == ("buyers", None, "event:shop:p1")
    assert doc["data_key"]["created_at"]
    assert set(doc["data_key"]) == {"created_at", "rewrapped_at"}  # never the key
    assert doc["consent"]["marketing"]["granted"] is False
    assert doc["consent"]["analytics"] is None
    assert doc["marketing"]["allowed"] is False
    assert doc["marketing"]["reason"].startswith("marketing consent withdrawn at")


async def test_the_export_takes_the_admin_key_only(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    assert (await client.get("/v1/customers/nobody/export", headers=READ)).status_code == 403
    assert (await client.get("/v1/customers/nobody/export")).status_code == 401
    unknown = await client.get("/v1/customers/nobody/export", headers=ADMIN)
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"


async def test_without_its_key_an_event_reads_as_erased_with_its_clear_fields(
    client: httpx.AsyncClient, common: CommonSettings, ingest: httpx.AsyncClient, db: AsyncEngine
) -> None:
    await a_customer_with_personal_data(ingest, client)
    async with db.begin() as conn:
        await conn.execute(text("DELETE FROM data_keys WHERE subject = 'cust-e'"))
    events = await all_events(client, "cust-e", 100)
    assert [e["personal"] for e in events] == ["opened", "erased", "erased"]  # anon-e's stays
    purchase = events[2]
    assert purchase["properties"] == {"order_id": "o-1", "amount": "59.90", "currency": "EUR"}
    assert "context" not in purchase
    assert "sealed" not in purchase
    assert events[1]["properties"].get("traits") is None
    exported = await client.get("/v1/customers/cust-e/export", headers=ADMIN)
    assert exported.status_code == 200
    assert exported.json()["events"] == events
    assert exported.json()["data_key"] is None


async def test_the_pages_hold_every_event_once_in_order(
    client: httpx.AsyncClient, common: CommonSettings, ingest: httpx.AsyncClient
) -> None:
    # ties on occurred_at (ordered by source, then event id), and events sent out of order
    docs = [
        event_doc(
            "purchase",
            customer_id="cust-p",
            event_id=f"e{n:02d}",
            occurred_at=at(20 - n // 3),
            order_id=f"o-{n}",
            items=[{"sku": f"s-{n}"}],
        )
        for n in range(23)
    ]
    response = await ingest.post("/v1/events/batch", json={"events": docs}, headers=WRITE)
    assert response.status_code == 202, response.text
    await until_events(client, "cust-p", 23)
    expected = sorted(docs, key=lambda d: (d["occurred_at"], d["event_id"]))
    for limit in (1, 5, 23, 500):
        events = await all_events(client, "cust-p", limit)
        assert [e["event_id"] for e in events] == [d["event_id"] for d in expected]
        assert all(e["personal"] == "opened" for e in events)
    exported = (await client.get("/v1/customers/cust-p/export", headers=ADMIN)).json()
    assert [e["event_id"] for e in exported["events"]] == [d["event_id"] for d in expected]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"after": "bm90IGEgY3Vyc29y"}, "after"),
        ({"after": "WyIyMDI2LTExLTIzIiwgMSwgMl0="}, "after"),
        ({"after": "!!"}, "after"),
    ],
)
async def test_a_bad_page_request_is_a_problem_naming_the_field(
    client: httpx.AsyncClient, common: CommonSettings, params: dict[str, Any], field: str
) -> None:
    response = await client.get("/v1/customers/anyone/events", params=params, headers=READ)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_an_unknown_customer_has_no_events(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    response = await client.get("/v1/customers/nobody/events", headers=READ)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert (await client.get("/v1/customers/nobody/events")).status_code == 401
