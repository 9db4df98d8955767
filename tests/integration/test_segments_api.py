"""The segments' HTTP API on the real Postgres: definitions and their versions, validation
(422 naming the field, 409 on a taken name, 404), key scopes, the cap on active segments,
members by keyset pages, history from the spans, the customer document's segments on both
read paths, and webhook subscriptions to segments."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_infra.segment_schema import (
    segment_catalog,
    segment_memberships,
    segment_versions,
    segments,
)
from clm_infra.settings import CommonSettings
from clm_stage_engine.app import create_app
from clm_stage_engine.settings import StageEngineSettings
from tests.factories import event_doc
from tests.integration.apps import app_client
from tests.integration.conftest import NO_REQUEST_LIMITS, eventually, send_events
from tests.keys import ADMIN, READ, WRITE

BUYERS = {"fact": "purchases", "op": "ge", "value": 1}
REPEAT = {
    "all": [
        {"fact": "purchases", "op": "ge", "value": 2},
        {"days_since": "last_seen_at", "op": "le", "value": 30},
    ]
}
T0 = datetime(2026, 11, 2, tzinfo=UTC)


def hours(n: float) -> datetime:
    return T0 + timedelta(hours=n)


@pytest.fixture
async def client(common: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    settings = StageEngineSettings(segments={"max_active": 3}, **NO_REQUEST_LIMITS)
    async with app_client(create_app(settings), "http://engine") as c:
        yield c


async def define(client: httpx.AsyncClient, name: str, condition: Any = BUYERS) -> Any:
    created = await client.post(
        "/v1/segments", json={"name": name, "condition": condition}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    return created.json()


async def catalog_version(db: AsyncEngine) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(select(segment_catalog.c.version))).scalar_one())


async def add_span(
    db: AsyncEngine, segment_id: int, customer: str, entered: datetime, left: datetime | None
) -> None:
    async with db.begin() as conn:
        await conn.execute(
            insert(segment_memberships).values(
                segment_id=segment_id,
                customer_id=customer,
                version=1,
                entered_at=entered,
                left_at=left,
                entered_by="event:shop:e",
                left_by=None if left is None else "sweep",
            )
        )


async def stored_segment(db: AsyncEngine, name: str) -> int:
    """A segment stored as is, with no backfill pending: whatever evaluates segments leaves
    the spans a test writes alone."""
    async with db.begin() as conn:
        created = await conn.execute(
            insert(segments)
            .values(name=name, condition=BUYERS, backfill_version=None)
            .returning(segments.c.id)
        )
        return int(created.scalar_one())


def fields_of(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return [e["field"] for e in response.json()["errors"]]


async def test_define_read_change_delete(client: httpx.AsyncClient, db: AsyncEngine) -> None:
    before = await catalog_version(db)
    created = await client.post(
        "/v1/segments",
        json={"name": "buyers", "description": "bought once", "condition": BUYERS},
        headers=ADMIN,
    )
    assert created.status_code == 201, created.text
    doc = created.json()
    sid = doc["id"]
    assert (doc["name"], doc["description"], doc["condition"]) == ("buyers", "bought once", BUYERS)
    assert (doc["version"], doc["announce_backfill"], doc["size"]) == (1, False, 0)
    assert doc["backfill"] == {
        "version": 1, "status": "pending", "done": 0, "total": None,
        "started_at": None, "finished_at": None,
    }  # fmt: skip
    assert await catalog_version(db) == before + 1

    listed = (await client.get("/v1/segments", headers=READ)).json()["segments"]
    assert [s["id"] for s in listed] == [sid]
    shown = (await client.get(f"/v1/segments/{sid}", headers=READ)).json()
    assert [v["version"] for v in shown["versions"]] == [1]
    assert shown["versions"][0]["condition"] == BUYERS

    renamed = await client.patch(
        f"/v1/segments/{sid}", json={"name": "customers", "announce_backfill": True}, headers=ADMIN
    )
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["version"]) == ("customers", 1)
    assert renamed.json()["announce_backfill"] is True
    assert await catalog_version(db) == before + 2

    changed = (
        await client.patch(f"/v1/segments/{sid}", json={"condition": REPEAT}, headers=ADMIN)
    ).json()
    assert (changed["version"], changed["backfill"]["version"]) == (2, 2)
    assert changed["backfill"]["status"] == "pending"
    again = await client.patch(f"/v1/segments/{sid}", json={"condition": REPEAT}, headers=ADMIN)
    assert again.json()["version"] == 2  # the same condition: no new version
    async with db.connect() as conn:
        versions = (
            await conn.execute(
                select(segment_versions.c.version, segment_versions.c.name).where(
                    segment_versions.c.segment_id == sid
                )
            )
        ).all()
    assert sorted(versions) == [(1, "buyers"), (2, "customers")]

    async def backfilled() -> bool | None:  # else it closes the span of no customer below
        shown = (await client.get(f"/v1/segments/{sid}", headers=READ)).json()
        return shown["backfill"] == {**shown["backfill"], "version": 2, "status": "done"} or None

    assert await eventually(backfilled)
    await add_span(db, sid, "c-1", hours(0), None)
    deleted = await client.delete(f"/v1/segments/{sid}", headers=ADMIN)
    assert deleted.json() == {"id": sid, "deleted": True}
    assert (await client.get(f"/v1/segments/{sid}", headers=READ)).status_code == 404
    assert (await client.delete(f"/v1/segments/{sid}", headers=ADMIN)).status_code == 404
    assert (await client.get("/v1/segments", headers=READ)).json()["segments"] == []
    async with db.connect() as conn:
        left_by = (await conn.execute(select(segment_memberships.c.left_by))).scalar_one()
    assert left_by == "deleted"
    history = await client.get(f"/v1/segments/{sid}/history", headers=READ)
    assert history.status_code == 200  # a deleted segment's history stays
    assert (await define(client, "customers"))["id"] != sid  # the name is free again


async def test_bad_definitions_are_422_naming_the_field(client: httpx.AsyncClient) -> None:
    async def post(**body: Any) -> httpx.Response:
        return await client.post("/v1/segments", json=body, headers=ADMIN)

    wrong_value = {"all": [BUYERS, BUYERS, {"fact": "purchases", "op": "ge", "value": "x"}]}
    assert fields_of(await post(name="s", condition=wrong_value)) == ["condition.all[2].value"]
    unknown_fact = {"fact": "nope", "op": "eq", "value": 1}
    assert fields_of(await post(name="s", condition=unknown_fact)) == ["condition.fact"]
    assert fields_of(await post(name="s", condition={"all": []})) == ["condition.all"]
    assert fields_of(await post(name="s", condition={})) == ["condition"]
    assert fields_of(await post(name="s", condition=[BUYERS])) == ["condition"]
    assert fields_of(await post(name="", condition=BUYERS)) == ["name"]
    assert fields_of(await post(name="x" * 201, condition=BUYERS)) == ["name"]
    assert fields_of(await post(name="a\x01b", condition=BUYERS)) == ["name"]
    long = "d" * 2001
    assert fields_of(await post(name="s", description=long, condition=BUYERS)) == ["description"]
    assert fields_of(await post(name="s", description="a\x00", condition=BUYERS)) == ["description"]
    assert fields_of(await post(name="s", condition=BUYERS, colour="red")) == ["colour"]
    assert fields_of(await post(name="s")) == ["condition"]
    sid = (await define(client, "fine"))["id"]
    patched = await client.patch(
        f"/v1/segments/{sid}", json={"condition": {"not": wrong_value}}, headers=ADMIN
    )
    assert fields_of(patched) == ["condition.not.all[2].value"]
    for path in ("/v1/segments/0", f"/v1/segments/{2**63}", "/v1/segments/x"):
        assert fields_of(await client.get(path, headers=READ)) == ["segment_id"]


async def test_a_taken_name_is_409_and_unknown_ids_404(client: httpx.AsyncClient) -> None:
    first = await define(client, "vip")
    other = await define(client, "others")
    taken = await client.post(
        "/v1/segments", json={"name": "vip", "condition": BUYERS}, headers=ADMIN
    )
    assert taken.status_code == 409
    assert taken.headers["content-type"] == "application/problem+json"
    renamed = await client.patch(f"/v1/segments/{other['id']}", json={"name": "vip"}, headers=ADMIN)
    assert renamed.status_code == 409
    same = await client.patch(f"/v1/segments/{first['id']}", json={"name": "vip"}, headers=ADMIN)
    assert same.status_code == 200
    missing = 9_000_000
    for method, path, headers in [
        ("GET", f"/v1/segments/{missing}", READ),
        ("PATCH", f"/v1/segments/{missing}", ADMIN),
        ("DELETE", f"/v1/segments/{missing}", ADMIN),
        ("GET", f"/v1/segments/{missing}/members", READ),
        ("GET", f"/v1/segments/{missing}/history", READ),
    ]:
        answer = await client.request(method, path, headers=headers, json={"name": "z"})
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"


async def test_key_scopes(client: httpx.AsyncClient) -> None:
    sid = (await define(client, "scoped"))["id"]
    body = {"name": "new", "condition": BUYERS}
    defining = [
        ("POST", "/v1/segments"),
        ("PATCH", f"/v1/segments/{sid}"),
        ("DELETE", f"/v1/segments/{sid}"),
    ]
    reading = [
        ("GET", "/v1/segments"),
        ("GET", f"/v1/segments/{sid}"),
        ("GET", f"/v1/segments/{sid}/members"),
        ("GET", f"/v1/segments/{sid}/history"),
    ]
    for method, path in defining + reading:
        assert (await client.request(method, path, json=body)).status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert (await client.request(method, path, json=body, headers=bad)).status_code == 401
        assert (await client.request(method, path, json=body, headers=WRITE)).status_code == 403
    for method, path in defining:
        assert (await client.request(method, path, json=body, headers=READ)).status_code == 403
    for method, path in reading:
        assert (await client.request(method, path, headers=ADMIN)).status_code == 403
        assert (await client.request(method, path, headers=READ)).status_code == 200


async def test_the_active_segments_are_capped(client: httpx.AsyncClient) -> None:
    ids = [(await define(client, f"s{i}"))["id"] for i in range(3)]
    refused = await client.post(
        "/v1/segments", json={"name": "s3", "condition": BUYERS}, headers=ADMIN
    )
    assert fields_of(refused) == ["name"]
    assert "CLM_SEGMENTS_MAX_ACTIVE" in refused.json()["detail"]
    await client.delete(f"/v1/segments/{ids[0]}", headers=ADMIN)
    await define(client, "s3")


async def test_members_by_keyset_pages_stay_stable(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    sid = await stored_segment(db, "members")
    staying = [f"m-{i:02d}" for i in range(0, 50, 2)]
    for customer in staying:
        await add_span(db, sid, customer, hours(1), None)
    await add_span(db, sid, "m-99", hours(0), hours(1))  # left: not a member
    seen: list[str] = []
    after: str | None = None
    inserted = 0
    while True:
        params: dict[str, Any] = {"limit": 7} | ({"after": after} if after else {})
        page = await client.get(f"/v1/segments/{sid}/members", params=params, headers=READ)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [m["customer_id"] for m in body["members"]]
        # customers entering between pages, before and after the cursor
        await add_span(db, sid, f"m-{2 * inserted + 1:02d}", hours(2), None)
        inserted += 1
        after = body["next"]
        if after is None:
            break
    assert [c for c in seen if c in staying] == staying  # each once, in order
    assert seen == sorted(seen)
    assert "m-99" not in seen
    first = (await client.get(f"/v1/segments/{sid}/members", headers=READ)).json()["members"][0]
    assert first == {"customer_id": "m-00", "entered_at": hours(1).isoformat(), "version": 1}
    assert (await client.get(f"/v1/segments/{sid}", headers=READ)).json()["size"] == len(
        staying
    ) + inserted
    bad = await client.get(f"/v1/segments/{sid}/members?after=a%00b", headers=READ)
    assert fields_of(bad) == ["after"]


async def test_history_from_the_spans(client: httpx.AsyncClient, db: AsyncEngine) -> None:
    sid = await stored_segment(db, "history")
    await add_span(db, sid, "a", hours(-5), None)  # a member all along
    await add_span(db, sid, "b", hours(-1), hours(2.5))  # leaves in the third hour
    await add_span(db, sid, "c", hours(0.5), hours(1.5))  # in and out
    await add_span(db, sid, "d", hours(1), None)  # enters at 01:00 exactly: in (00:00, 01:00]
    await add_span(db, sid, "e", hours(30), None)  # on the next day
    params = {"from": hours(0).isoformat(), "to": hours(3).isoformat(), "bucket": "hour"}
    doc = (await client.get(f"/v1/segments/{sid}/history", params=params, headers=READ)).json()
    assert (doc["size_at_from"], doc["size_at_to"]) == (2, 2)
    assert (doc["entries"], doc["exits"]) == (2, 2)
    assert [(b["end"], b["entries"], b["exits"], b["size"]) for b in doc["buckets"]] == [
        (hours(1).isoformat(), 2, 0, 4),
        (hours(2).isoformat(), 0, 1, 3),
        (hours(3).isoformat(), 0, 1, 2),
    ]
    cut = {"from": hours(0.25).isoformat(), "to": hours(1.75).isoformat(), "bucket": "hour"}
    doc = (await client.get(f"/v1/segments/{sid}/history", params=cut, headers=READ)).json()
    assert [(b["start"], b["end"], b["size"]) for b in doc["buckets"]] == [
        (hours(0.25).isoformat(), hours(1).isoformat(), 4),
        (hours(1).isoformat(), hours(1.75).isoformat(), 3),
    ]
    days = {"from": hours(-24).isoformat(), "to": hours(48).isoformat(), "bucket": "day"}
    doc = (await client.get(f"/v1/segments/{sid}/history", params=days, headers=READ)).json()
    assert [(b["entries"], b["exits"], b["size"]) for b in doc["buckets"]] == [
        (2, 0, 2),
        (2, 2, 2),
        (1, 0, 3),
    ]

    async def refused(**params: str) -> list[str]:
        return fields_of(
            await client.get(f"/v1/segments/{sid}/history", params=params, headers=READ)
        )

    assert await refused(**{"from": hours(3).isoformat(), "to": hours(1).isoformat()}) == ["to"]
    far = {"from": hours(0).isoformat(), "to": hours(1001).isoformat()}
    assert await refused(**far, bucket="hour") == ["bucket"]
    assert (
        await client.get(
            f"/v1/segments/{sid}/history", params=far | {"bucket": "day"}, headers=READ
        )
    ).status_code == 200
    assert await refused(**{"from": "2026-11-02T00:00:00"}) == ["from"]
    assert await refused(**{"from": "1969-12-31T23:59:59Z"}) == ["from"]
    assert await refused(to="9999-12-31T23:59:59-14:00") == ["to"]
    assert await refused(bucket="week") == ["bucket"]


async def test_the_customer_document_has_its_segments_on_both_paths(
    common: CommonSettings, db: AsyncEngine
) -> None:
    await send_events(
        common,
        event_doc("purchase", customer_id="seg-1", event_id="seg-p1"),
        event_doc("purchase", customer_id="seg-2", event_id="seg-p2"),
    )
    hot_app = create_app(StageEngineSettings(**NO_REQUEST_LIMITS))
    routed_app = create_app(StageEngineSettings(**NO_REQUEST_LIMITS), hot_read=False)
    async with (
        app_client(hot_app, "http://engine") as hot,
        app_client(routed_app, "http://engine") as routed,
    ):

        async def applied() -> bool | None:
            found = [await hot.get(f"/v1/customers/seg-{i}", headers=READ) for i in (1, 2)]
            return all(r.status_code == 200 for r in found) or None

        assert await eventually(applied)
        buyers, gone, was = [await stored_segment(db, n) for n in ("buyers", "gone", "was")]
        await add_span(db, buyers, "seg-1", hours(1), None)
        await add_span(db, gone, "seg-1", hours(2), None)
        await add_span(db, was, "seg-1", hours(0), hours(1))
        assert (await hot.delete(f"/v1/segments/{gone}", headers=ADMIN)).status_code == 200
        answers = {
            cid: [(await c.get(f"/v1/customers/{cid}", headers=READ)).json() for c in (hot, routed)]
            for cid in ("seg-1", "seg-2")
        }
    for cid, (by_hot, by_router) in answers.items():
        assert by_hot == by_router, cid
    assert answers["seg-1"][0]["segments"] == [
        {"id": buyers, "name": "buyers", "entered_at": hours(1).isoformat()}
    ]
    assert answers["seg-2"][0]["segments"] == []


async def test_webhook_subscriptions_to_segments(
    client: httpx.AsyncClient, receiver_url: str
) -> None:
    first = (await define(client, "hooked"))["id"]
    second = (await define(client, "also"))["id"]
    created = await client.post(
        "/v1/webhooks", json={"url": receiver_url, "segments": [second, first]}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    assert created.json()["segments"] == sorted([first, second])
    plain = await client.post("/v1/webhooks", json={"url": receiver_url}, headers=ADMIN)
    assert plain.json()["segments"] is None
    listed = (await client.get("/v1/webhooks", headers=ADMIN)).json()["subscriptions"]
    assert [s["segments"] for s in listed] == [sorted([first, second]), None]

    async def refused(body: dict[str, Any]) -> list[str]:
        return fields_of(await client.post("/v1/webhooks", json=body, headers=ADMIN))

    await client.delete(f"/v1/segments/{second}", headers=ADMIN)
    assert await refused({"url": receiver_url, "segments": [first, second]}) == ["segments"]
    assert await refused({"url": receiver_url, "segments": [9_000_000]}) == ["segments"]
    assert await refused({"url": receiver_url, "segments": []}) == ["segments"]
    assert await refused({"url": receiver_url, "segments": [0]}) == ["segments.0"]
    both = {"url": receiver_url, "segments": [first], "stages": ["purchase"]}
    assert await refused(both) == ["segments"]


@pytest.fixture
def receiver_url() -> str:
    """A URL the tests' webhook policy accepts (nothing need answer there)."""
    return "http://127.0.0.1:9/hook"
