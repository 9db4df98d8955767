"""Erasure that reaches every copy: after ``DELETE /v1/customers/{id}`` none of the customer's
personal values is readable anywhere in the events topic (its key is shredded), while a replay
of that same topic rebuilds every other customer exactly."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import text

from clm_devstack.services import start_service
from clm_infra.db import create_engine
from clm_infra.kafka import log_offsets
from clm_infra.privacy.ciphers import master_keys
from clm_infra.privacy.reader import open_events
from tests.e2e.conftest import Stack, free_port, settings_of
from tests.e2e.test_replay_with_metrics import clm
from tests.integration.conftest import eventually, read_topic
from tests.keys import ADMIN, READ, WRITE

CUSTOMERS = 6


def _person(n: int) -> dict[str, str]:
    return {
        "customer_id": f"shred-c{n}",
        "anonymous_id": f"shred-a{n}",
        "email": f"person{n}.secret@mail.example",
        "name": f"Ada{n} Lovelace{n}",
        "ip": f"198.51.100.{10 + n}",
    }


def _journey(n: int, start: datetime) -> list[dict[str, Any]]:
    """A visit, an identify, a signup, a purchase and a review: personal values in the
    context, the URL, the traits, the items and the free text. Even customers visit as an
    anonymous profile the identify links (sealed under its own key), odd ones as themselves."""
    p = _person(n)
    at = [(start + timedelta(hours=h)).isoformat() for h in range(5)]
    context = {"ip": p["ip"], "user_agent": f"Browser of {p['name']}"}
    docs = [
        {
            "type": "site_visit",
            "event_id": f"{p['anonymous_id']}-v",
            "anonymous_id": p["anonymous_id"],
            "occurred_at": at[0],
            "context": context,
            "properties": {"url": f"https://shop.example/welcome?email={p['email']}"},
        },
        {
            "type": "identify",
            "event_id": f"{p['customer_id']}-i",
            "customer_id": p["customer_id"],
            "anonymous_id": p["anonymous_id"],
            "occurred_at": at[1],
            "context": context,
            "properties": {"traits": {"email": p["email"], "name": p["name"]}},
        },
        {
            "type": "signup",
            "event_id": f"{p['customer_id']}-s",
            "customer_id": p["customer_id"],
            "occurred_at": at[2],
            "properties": {"plan": "free"},
        },
        {
            "type": "purchase",
            "event_id": f"{p['customer_id']}-p",
            "customer_id": p["customer_id"],
            "occurred_at": at[3],
            "context": context,
            "properties": {
                "order_id": f"o-{n}",
                "amount": f"{20 + n}.50",
                "currency": "EUR",
                "items": [{"sku": "gift", "engraving": p["name"]}],
            },
        },
        {
            "type": "review",
            "event_id": f"{p['customer_id']}-r",
            "customer_id": p["customer_id"],
            "occurred_at": at[4],
            "properties": {"rating": 4, "text": f"Sent to {p['email']}, thanks!"},
        },
    ]
    if n % 2:
        docs[0] = {**docs[0], "customer_id": p["customer_id"], "event_id": f"{p['customer_id']}-v"}
        del docs[0]["anonymous_id"]
        del docs[1]["anonymous_id"]
    return docs


async def _records(env: dict[str, str], topic: str) -> list[Any]:
    """Every record of ``topic``, from its beginning to its end now."""
    settings = settings_of(env)
    offsets = await log_offsets(settings.kafka, [topic])
    count = sum(end - begin for begin, end in offsets.values())
    records = await read_topic(settings.kafka.bootstrap, topic, expect=count)
    assert len(records) == count
    return records


async def _raw_records(env: dict[str, str]) -> list[bytes]:
    """Every record of every topic the stack writes, as bytes (key, value and headers)."""
    topics = settings_of(env).topics
    out: list[bytes] = []
    for topic in (topics.events, topics.lifecycle, topics.dlq, topics.segments):
        for rec in await _records(env, topic):
            headers = b"".join(k.encode() + v for k, v in rec.headers)
            out.append((rec.key or b"") + (rec.value or b"") + headers)
    return out


async def _snapshot(engine: httpx.AsyncClient, ids: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cid in ids:
        doc = (await engine.get(f"/v1/customers/{cid}")).json()
        history = (await engine.get(f"/v1/customers/{cid}/history")).json()
        out[cid] = {"doc": doc, "history": history}
    return out


def _comparable(snapshot: dict[str, Any]) -> dict[str, Any]:
    """What a replay must reproduce exactly: every customer's document, and the stage history
    of those without an anonymous profile. An anonymous profile's events are on another
    partition than its customer's, so whether its visit is folded before or after the identify
    that links them depends on the order the partitions are read in: the history's steps may
    differ (the customer's document does not)."""
    return {
        cid: got if int(cid.rsplit("c", 1)[1]) % 2 else {"doc": got["doc"]}
        for cid, got in snapshot.items()
    }


async def _nothing_of_the_victim_on_the_topics(
    stack: Stack, victim: dict[str, str], sent: int
) -> None:
    """None of the victim's personal values in clear in any record of any topic, and its
    sealed parts do not open; every other customer's do."""
    raw = await _raw_records(stack.env)
    assert len(raw) >= sent
    for value in (victim["email"], victim["name"], victim["ip"]):
        assert not [r for r in raw if value.encode() in r], value
    survivor = _person(1)
    for value in (survivor["email"], survivor["name"], survivor["ip"]):
        assert not [r for r in raw if value.encode() in r], value  # sealed too, but openable
    on_topic = [
        orjson.loads(r.value)
        for r in await _records(stack.env, settings_of(stack.env).topics.events)
    ]
    assert len(on_topic) == sent
    db = create_engine(stack.env["CLM_DATABASE_URL"], pool_size=1)
    try:
        async with db.connect() as conn:
            opened = await open_events(conn, master_keys(settings_of(stack.env)), on_topic)
            stored = b"".join(
                r[0] for r in await conn.execute(text("SELECT payload FROM customer_events"))
            )
    finally:
        await db.dispose()
    mine = {victim["customer_id"], victim["anonymous_id"]}
    for doc, personal in opened:
        whose = doc.get("customer_id") or doc.get("anonymous_id")
        if doc["type"] == "signup":
            assert personal == "none"
        elif whose in mine:
            assert personal == "erased", doc
            assert victim["email"] not in orjson.dumps(doc).decode()
        else:
            assert personal == "opened", doc
    assert stored  # the survivors' event log, in Postgres: sealed as on the topic
    for value in (*victim.values(), survivor["email"], survivor["name"], survivor["ip"]):
        if value not in (victim["customer_id"], victim["anonymous_id"]):
            assert value.encode() not in stored, value
    opened_text = b"".join(orjson.dumps(doc) for doc, _ in opened)
    assert survivor["email"].encode() in opened_text
    assert survivor["name"].encode() in opened_text


async def test_erasure_shreds_every_copy_and_a_replay_rebuilds_the_others(
    stack: Stack, tmp_path: Path
) -> None:
    start = datetime.now(UTC) - timedelta(days=3)
    docs = [e for n in range(CUSTOMERS) for e in _journey(n, start)]
    ids = [_person(n)["customer_id"] for n in range(CUSTOMERS)]
    async with httpx.AsyncClient(base_url=stack.ingest, headers=WRITE) as ingest:
        sent = await ingest.post("/v1/events/batch", json={"events": docs})
        assert sent.status_code == 202, sent.text
    async with httpx.AsyncClient(base_url=stack.stage_engine, headers=READ) as engine:

        async def all_reviewed() -> dict[str, Any] | None:
            snap = await _snapshot(engine, ids)
            done = all(s["doc"].get("reviews") == 1 for s in snap.values())
            return snap if done else None

        before = await eventually(all_reviewed, timeout=90, every=0.5)
        victim = _person(0)
        erased = await engine.delete(f"/v1/customers/{victim['customer_id']}", headers=ADMIN)
        assert erased.status_code in (200, 204), erased.text

    await _nothing_of_the_victim_on_the_topics(stack, victim, len(docs))

    # 2. a replay of the very same topic rebuilds every other customer exactly
    stack.processes["stage-engine"].stop()
    done = await asyncio.to_thread(clm, stack.env, "replay", "--yes")
    assert done.returncode == 0, done.stderr
    rebuilt = start_service("stage-engine", stack.env, tmp_path / "after", free_port())
    try:
        async with httpx.AsyncClient(base_url=rebuilt.base_url, headers=READ) as engine:
            others = ids[1:]
            want = {cid: before[cid] for cid in others}

            last: dict[str, Any] = {}

            async def same_again() -> dict[str, Any] | None:
                last.update(_comparable(await _snapshot(engine, others)))
                return last if last == _comparable(want) else None

            try:
                await eventually(same_again, timeout=90, every=0.5)
            except AssertionError:
                assert last == _comparable(want)  # names what differs
            gone = await engine.get(f"/v1/customers/{victim['customer_id']}")
            assert gone.status_code == 404
    finally:
        rebuilt.stop()
