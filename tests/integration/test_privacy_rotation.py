"""Master key rotation (``clm privacy``), data keys made by concurrent replicas, and the
ingest's key cache, on the real Postgres and Kafka."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_infra.db import create_engine
from clm_infra.kafka import log_ends
from clm_infra.privacy.ciphers import DataKey, new_master_key, parse_master_keys
from clm_infra.privacy.reader import open_events
from clm_infra.privacy.store import KeyRing, count_by_master, make_keys, read_keys, shred
from clm_infra.settings import CommonSettings
from clm_ingest.settings import IngestSettings
from tests.factories import event_doc
from tests.integration.conftest import read_topic
from tests.integration.ingest_server import ingest_client
from tests.integration.test_clm_cli import clm
from tests.keys import WRITE

A = new_master_key()
B = new_master_key()
C = new_master_key()


def master_id(entry: str) -> str:
    return entry.partition(":")[0]


def use_masters(monkeypatch: pytest.MonkeyPatch, *entries: str) -> None:
    monkeypatch.setenv("CLM_PRIVACY_MASTER_KEYS", ",".join(entries))


async def privacy_status(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """``clm privacy status --json``, which always exits 0."""
    status, out, err = await clm(["privacy", "status", "--json"], capsys)
    assert status == 0, err
    doc: dict[str, Any] = orjson.loads(out)
    return doc


def key_ids(keys: dict[str, DataKey]) -> dict[str, str]:
    return {s: k.key_id for s, k in keys.items()}


async def keys_under(db: AsyncEngine, entry: str, subjects: list[str]) -> dict[str, DataKey]:
    """Data keys for ``subjects`` made (as the ingest makes them) under master key ``entry``."""
    ring = KeyRing(db, parse_master_keys(entry), size=0, ttl_s=0)
    return await ring.keys_for(subjects)


async def test_rotation_rewraps_every_key_and_never_touches_the_topic(
    common: CommonSettings,
    db: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use_masters(monkeypatch, A)
    review = event_doc("review", customer_id="cust-r", text="Lovely shoes, says Jane Roe")
    signup = event_doc("signup", customer_id="cust-s", email_hash="ab" * 32)
    async with ingest_client(IngestSettings()) as ingest:
        for doc in (review, signup):
            response = await ingest.post("/v1/events", json=doc, headers=WRITE)
            assert response.status_code == 202, response.text
    made = await keys_under(db, A, [f"cust-{i:03}" for i in range(23)])
    records = await read_topic(common.kafka.bootstrap, common.topics.events, expect=2)
    assert len(records) == 2
    assert all(b'"sealed"' in r.value and b"Jane Roe" not in r.value for r in records)
    ends_before = await log_ends(common.kafka, common.topics.events)
    async with db.connect() as conn:
        before = await read_keys(conn, [*made, "cust-r", "cust-s"])
    assert {k.master_id for k in before.values()} == {master_id(A)}

    use_masters(monkeypatch, B, A)
    assert await privacy_status(capsys) == {
        "current": master_id(B),
        "master_keys": [
            {"id": master_id(B), "data_keys": 0, "state": "current"},
            {"id": master_id(A), "data_keys": 25, "state": "to re-wrap"},
        ],
        "data_keys": 25,
        "to_rewrap": 25,
        "not_configured": {},
    }
    status, out, _ = await clm(["privacy", "status"], capsys)
    assert status == 0
    assert f"25 data keys; 25 to re-wrap under {master_id(B)} (clm privacy rotate)" in out

    status, out, err = await clm(["privacy", "rotate", "--batch", "7"], capsys)
    assert status == 0, err
    assert "rotate: 25 data keys to re-wrap" in out
    assert "rotate: 7 re-wrapped" in out
    assert "rotate: done, 25 data keys re-wrapped" in out

    after_status = await privacy_status(capsys)
    assert after_status["master_keys"] == [
        {"id": master_id(B), "data_keys": 25, "state": "current"},
        {"id": master_id(A), "data_keys": 0, "state": "to re-wrap"},
    ]
    assert after_status["to_rewrap"] == 0
    status, out, _ = await clm(["privacy", "rotate"], capsys)
    assert status == 0
    assert "rotate: done, 0 data keys re-wrapped" in out

    only_b = parse_master_keys(B)
    async with db.connect() as conn:
        after = await read_keys(conn, list(before))
        assert await count_by_master(conn) == {master_id(B): 25}
        for subject, stored in after.items():
            assert stored.key_id == before[subject].key_id  # the same data key, re-wrapped
            assert stored.wrapped != before[subject].wrapped
            key = only_b.unwrap(subject, stored.key_id, stored.master_id, stored.wrapped)
            if subject in made:
                plain = made[subject].seal(b"personal", b"aad")
                assert key.open(plain, b"aad") == b"personal"
        raw = await read_topic(common.kafka.bootstrap, common.topics.events, expect=2)
        docs = await open_events(conn, only_b, [orjson.loads(r.value) for r in raw])
    assert [state for _, state in docs] == ["opened", "opened"]
    by_id = {doc["event_id"]: doc for doc, _ in docs}
    assert by_id[review["event_id"]]["properties"]["text"] == "Lovely shoes, says Jane Roe"
    assert by_id[signup["event_id"]]["properties"]["email_hash"] == "ab" * 32
    assert await log_ends(common.kafka, common.topics.events) == ends_before


async def test_rotate_refuses_while_a_master_key_is_missing(
    common: CommonSettings,
    db: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await keys_under(db, A, ["cust-a1", "cust-a2"])
    await keys_under(db, C, ["cust-c1"])
    use_masters(monkeypatch, B, A)

    status, out, err = await clm(["privacy", "rotate"], capsys)
    assert status == 2
    assert f"{master_id(C)} (1 keys)" in err
    assert f"configured: {master_id(B)}, {master_id(A)}" in err
    assert "nothing was re-wrapped" in err
    async with db.connect() as conn:
        assert await count_by_master(conn) == {master_id(A): 2, master_id(C): 1}

    assert (await privacy_status(capsys))["not_configured"] == {master_id(C): 1}
    status, out, _ = await clm(["privacy", "status"], capsys)
    assert status == 0
    assert "not configured" in out
    assert f"warning: data keys under master keys that are not configured: {master_id(C)}" in out

    use_masters(monkeypatch, B, A, C)
    status, out, err = await clm(["privacy", "rotate"], capsys)
    assert status == 0, err
    assert "rotate: done, 3 data keys re-wrapped" in out


async def test_a_master_key_under_a_known_id_that_does_not_open_is_refused(
    common: CommonSettings,
    db: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await keys_under(db, A, ["cust-1", "cust-2"])
    impostor = f"{master_id(A)}:{C.partition(':')[2]}"  # A's id, another key
    use_masters(monkeypatch, B, impostor)
    status, _, err = await clm(["privacy", "rotate"], capsys)
    assert status == 2
    assert f"master key {master_id(A)!r} does not open" in err
    assert "0 data keys were re-wrapped, the rest are not" in err
    async with db.connect() as conn:
        assert await count_by_master(conn) == {master_id(A): 2}


async def test_concurrent_rotations_rewrap_each_key_once(
    common: CommonSettings,
    db: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    subjects = [f"cust-{i:03}" for i in range(120)]
    made = await keys_under(db, A, subjects)
    use_masters(monkeypatch, B, A)
    results = await asyncio.gather(
        *(asyncio.to_thread(_main, ["privacy", "rotate", "--batch", "5"]) for _ in range(3))
    )
    capsys.readouterr()
    assert results == [0, 0, 0]
    only_b = parse_master_keys(B)
    async with db.connect() as conn:
        assert await count_by_master(conn) == {master_id(B): 120}
        stored = await read_keys(conn, subjects)
    for subject, key in stored.items():
        assert key.key_id == made[subject].key_id
        only_b.unwrap(subject, key.key_id, key.master_id, key.wrapped)


async def test_new_master_keys_parse_and_prod_refuses_to_run_without_one(
    common: CommonSettings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = await clm(["privacy", "new-master-key"], capsys)
    assert status == 0
    entry = out.strip()
    assert parse_master_keys(entry).ids == [master_id(entry)]
    status, again, _ = await clm(["privacy", "new-master-key"], capsys)
    assert again.strip() != entry

    monkeypatch.setenv("CLM_ENV", "prod")
    monkeypatch.delenv("CLM_PRIVACY_MASTER_KEYS", raising=False)
    for command in (["privacy", "status"], ["privacy", "rotate"]):
        status, _, err = await clm(command, capsys)
        assert status == 2
        assert "CLM_PRIVACY_MASTER_KEYS is not set" in err


def _main(argv: list[str]) -> int:
    from clm_cli import main as cli

    return cli.main(argv)


async def test_replicas_making_the_same_new_keys_at_once_agree_on_them(
    common: CommonSettings,
) -> None:
    masters = parse_master_keys(A)
    subjects = [f"new-{i:02}" for i in range(30)]
    engine = create_engine(common.database.url, pool_size=6)
    start = asyncio.Event()

    async def replica(seed: int) -> dict[str, str]:
        mine = random.Random(seed).sample(subjects, len(subjects))
        async with engine.begin() as conn:
            await conn.exec_driver_sql("SELECT 1")  # each its own connection, held
            await start.wait()
            return key_ids(await make_keys(conn, masters, mine))

    try:
        tasks = [asyncio.create_task(replica(seed)) for seed in range(6)]
        await asyncio.sleep(0.3)
        start.set()
        results = await asyncio.gather(*tasks)
        async with engine.connect() as conn:
            stored = {s: k.key_id for s, k in (await read_keys(conn, subjects)).items()}
    finally:
        await engine.dispose()
    assert len(stored) == len(subjects)
    assert all(result == stored for result in results)


async def test_the_key_ring_is_bounded_and_reads_again_after_its_ttl(
    common: CommonSettings, db: AsyncEngine
) -> None:
    masters = parse_master_keys(A)
    subjects = [f"cust-{i}" for i in range(5)]
    ring = KeyRing(db, masters, size=3, ttl_s=60)
    first = key_ids(await ring.keys_for(subjects))
    async with db.begin() as conn:
        assert await shred(conn, subjects) == 5
    again = key_ids(await ring.keys_for(subjects))
    kept = [s for s in subjects if again[s] == first[s]]
    assert len(kept) == 3  # the ring remembered only its size; the others were made anew
    async with db.connect() as conn:
        stored = {s: k.key_id for s, k in (await read_keys(conn, subjects)).items()}
    assert set(stored) == set(subjects) - set(kept)

    fresh = KeyRing(db, masters, size=100, ttl_s=0)
    now = key_ids(await fresh.keys_for(subjects))
    assert key_ids(await fresh.keys_for(subjects)) == now  # read again, the same keys
    async with db.begin() as conn:
        await shred(conn, subjects)
    renewed = key_ids(await fresh.keys_for(subjects))
    assert all(renewed[s] != now[s] for s in subjects)  # ttl 0: the erasure is seen at once


async def test_an_ingest_without_the_master_key_of_a_data_key_answers_503(
    common: CommonSettings, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await keys_under(db, B, ["cust-b"])  # re-wrapped by a rotation this ingest has not seen
    use_masters(monkeypatch, A)
    doc = event_doc("review", customer_id="cust-b", text="Lovely shoes")
    async with ingest_client(IngestSettings()) as ingest:
        response = await ingest.post("/v1/events", json=doc, headers=WRITE)
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "does not open here" in response.json()["detail"]
    assert "Retry-After" in response.headers
