"""The stage engine's lifecycle on real Kafka and Postgres: late events, identity merges, the
sweeper with a test clock, erasure, replay, webhooks, the read API and the rule file."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socketserver
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain.rules import LifecycleRules, RulesError
from clm_infra import replay
from clm_infra.kafka import log_ends
from clm_infra.schema import metadata
from clm_infra.settings import CommonSettings
from clm_metrics.app import create_app as metrics_app
from clm_metrics.settings import MetricsSettings
from clm_stage_engine.app import create_app
from clm_stage_engine.settings import StageEngineSettings
from clm_stage_engine.sweeper import sweep_once
from clm_stage_engine.webhooks import verify_signature
from tests.factories import event_doc
from tests.integration.apps import app_client, read_customer
from tests.integration.conftest import (
    eventually,
    produce,
    read_topic,
    send_events,
    until_events,
    wire,
)
from tests.integration.webhook_receiver import Receiver, receiving
from tests.keys import ADMIN, READ, WRITE

# recent enough that nothing is inactive by the real clock (the app's own sweeper runs too)
DAY0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=20)


def at(days: float) -> str:
    return (DAY0 + timedelta(days=days)).isoformat()


async def test_a_late_first_touch_is_applied_by_event_time(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    await send_events(
        common,
        event_doc(
            "site_visit",
            customer_id="late",
            event_id="v",
            occurred_at=at(5),
            channel="email",
        ),
        event_doc("purchase", customer_id="late", event_id="p", occurred_at=at(6)),
    )
    await until_events(client, "late", 2)
    await send_events(
        common,
        event_doc(
            "ad_click",
            customer_id="late",
            event_id="a",
            occurred_at=at(1),
            channel="paid_search",
        ),
        event_doc("signup", customer_id="late", event_id="s", occurred_at=at(2)),
    )
    c = await until_events(client, "late", 4)
    assert c["first_channel"] == "paid_search"
    assert c["first_seen_at"] == at(1)
    assert c["acquired_at"] == at(2)
    assert c["stage"] == "conversion"
    assert c["converted_at"] == at(6)


async def test_identity_merge_keeps_first_touch_and_later_anonymous_events_land_on_the_customer(
    client: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine
) -> None:
    anon = event_doc(
        "ad_click", customer_id=None, event_id="a1", occurred_at=at(0), channel="social"
    )
    anon["anonymous_id"] = "anon-7"
    await send_events(common, anon)
    assert (await until_events(client, "anon-7", 1))["stage"] == "reach"

    identify = event_doc(
        "identify",
        customer_id="known-7",
        event_id="i1",
        occurred_at=at(1),
        traits={"email": "k@x.y"},
    )
    identify["anonymous_id"] = "anon-7"
    await send_events(common, identify)
    c = await until_events(client, "known-7", 2)
    assert c["first_channel"] == "social"
    assert c["first_seen_at"] == at(0)
    assert c["stage"] == "acquisition"
    assert await read_customer(client, "anon-7") is None

    later = event_doc("purchase", customer_id=None, event_id="p1", occurred_at=at(2))
    later["anonymous_id"] = "anon-7"
    await send_events(common, later)
    c = await until_events(client, "known-7", 3)
    assert c["stage"] == "conversion"
    history = (await client.get("/v1/customers/known-7/history", headers=READ)).json()
    assert [t["to_stage"] for t in history["transitions"]] == ["reach", "acquisition", "conversion"]
    async with db.connect() as conn:
        link = (
            await conn.execute(
                text("SELECT customer_id FROM identity_links WHERE anonymous_id = 'anon-7'")
            )
        ).scalar_one()
    assert link == "known-7"


async def test_the_sweeper_moves_quiet_customers_with_a_test_clock(
    client: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine
) -> None:
    await send_events(
        common,
        event_doc("purchase", customer_id="quiet", event_id="q1", occurred_at=at(0)),
        event_doc("purchase", customer_id="busy", event_id="b1", occurred_at=at(0)),
        event_doc("site_visit", customer_id="busy", event_id="b2", occurred_at=at(50)),
    )
    await until_events(client, "busy", 2)
    rules = LifecycleRules()
    topic = common.topics.lifecycle
    assert await sweep_once(db, rules, DAY0 + timedelta(days=59), lifecycle_topic=topic) == 0
    assert await sweep_once(db, rules, DAY0 + timedelta(days=61), lifecycle_topic=topic) == 1
    assert (await read_customer(client, "quiet"))["stage"] == "at_risk"  # type: ignore[index]
    assert (await read_customer(client, "busy"))["stage"] == "conversion"  # type: ignore[index]
    assert await sweep_once(db, rules, DAY0 + timedelta(days=181), lifecycle_topic=topic) == 2
    quiet = await read_customer(client, "quiet")
    assert quiet is not None
    assert quiet["stage"] == "churned"
    assert quiet["stage_entered_at"] == at(180)
    assert (await read_customer(client, "busy"))["stage"] == "at_risk"  # type: ignore[index]
    history = (await client.get("/v1/customers/quiet/history", headers=READ)).json()
    assert [(t["to_stage"], t["reason"]) for t in history["transitions"]] == [
        ("conversion", "first purchase"),
        ("at_risk", "inactive"),
        ("churned", "inactive"),
    ]
    assert await sweep_once(db, rules, DAY0 + timedelta(days=181), lifecycle_topic=topic) == 0

    # a purchase brings the churned customer back, recorded as a reactivation
    await send_events(
        common,
        event_doc(
            "purchase",
            customer_id="quiet",
            event_id="q2",
            order_id="o-2",
            occurred_at=at(200),
        ),
    )
    back = await until_events(client, "quiet", 2)
    assert back["stage"] == "retention"
    assert back["reactivations"] == 1
    # three events, three moves by time, the reactivation: seven records, and the topic holds
    # no others
    records = await read_topic(common.kafka.bootstrap, common.topics.lifecycle, expect=7)
    assert sum((await log_ends(common.kafka, common.topics.lifecycle)).values()) == len(records)
    kinds = [orjson.loads(r.value).get("kind") for r in records]
    assert kinds.count("time") == 3


async def test_erasure_leaves_nothing_and_a_replay_does_not_bring_the_customer_back(
    client: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine
) -> None:
    anon = event_doc("site_visit", customer_id=None, event_id="ea", occurred_at=at(0))
    anon["anonymous_id"] = "erase-anon"
    ident = event_doc(
        "identify",
        customer_id="erase-me",
        event_id="ei",
        occurred_at=at(1),
        traits={"email": "e@x"},
    )
    ident["anonymous_id"] = "erase-anon"
    await send_events(
        common,
        anon,
        ident,
        event_doc("purchase", customer_id="erase-me", event_id="ep", occurred_at=at(2)),
        event_doc("purchase", customer_id="keep-me", event_id="kp", occurred_at=at(2)),
    )
    await until_events(client, "erase-me", 3)
    await until_events(client, "keep-me", 1)
    assert (await client.delete("/v1/customers/erase-me", headers=READ)).status_code == 403
    assert (await client.delete("/v1/customers/erase-me", headers=WRITE)).status_code == 403
    erased = await client.delete("/v1/customers/erase-me", headers=ADMIN)
    assert erased.status_code == 200, erased.text
    assert await read_customer(client, "erase-me") is None
    assert (await client.delete("/v1/customers/erase-me", headers=ADMIN)).status_code == 404

    async def leftovers() -> list[str]:
        found = []
        async with db.connect() as conn:
            for table in metadata.sorted_tables:
                if table.name in {"outbox", "kpi_buckets", "metrics_processed", "stage_counts"}:
                    continue
                for column in table.columns:
                    if column.type.python_type is not str:
                        continue
                    n = (
                        await conn.execute(
                            select(func.count())
                            .select_from(table)
                            .where(column.in_(["erase-me", "erase-anon"]))
                        )
                    ).scalar_one()
                    if n:
                        found.append(f"{table.name}.{column.name}")
        return found

    assert await leftovers() == []

    ends = await log_ends(common.kafka, common.topics.events)
    async with db.begin() as conn:
        await replay.reset_for_replay(
            conn, StageEngineSettings().stage_engine_group, common.topics.events, ends
        )
    await until_events(client, "keep-me", 1)
    await asyncio.sleep(2)  # let the whole log replay
    assert await read_customer(client, "erase-me") is None
    assert await leftovers() == []


async def test_a_replay_rebuilds_the_same_states_as_live_processing(
    client: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine
) -> None:
    docs = []
    for i in range(12):
        cid = f"r{i % 4}"
        kind = ["site_visit", "signup", "purchase", "review"][i % 4]
        props: dict[str, Any] = {"rating": 5} if kind == "review" else {}
        docs.append(
            wire(
                event_doc(
                    kind,
                    customer_id=cid,
                    event_id=f"rp{i}",
                    occurred_at=at(i),
                    order_id=f"o{i}",
                    **props,
                )
            )
        )
    await produce(common.kafka.bootstrap, common.topics.events, docs)
    for i in range(4):
        await until_events(client, f"r{i}", 3)

    async def snapshot() -> list[Any]:
        async with db.connect() as conn:
            rows = await conn.execute(text("SELECT * FROM customers ORDER BY customer_id"))
            return [tuple(v for k, v in r._mapping.items() if k != "updated_at") for r in rows]

    live = await snapshot()
    # the operator's command, as an operator runs it
    done = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clm_cli",
        "replay",
        "--yes",
        "--group",
        StageEngineSettings().stage_engine_group,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await done.communicate()
    assert done.returncode == 0
    assert b"reset to 0" in out

    async def rebuilt() -> list[Any] | None:
        now = await snapshot()
        return now if len(now) == 4 and all(r[20] == 3 for r in now) else None  # events column

    await eventually(rebuilt)
    assert await snapshot() == live


@pytest.fixture
def receiver() -> Iterator[str]:
    with receiving() as url:
        yield url


async def test_stage_changes_go_out_as_signed_webhooks(
    client: httpx.AsyncClient, common: CommonSettings, receiver: str, db: AsyncEngine
) -> None:
    created = await client.post(
        "/v1/webhooks", json={"url": receiver, "stages": ["purchase"]}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    await send_events(
        common,
        event_doc("site_visit", customer_id="hooked", event_id="h1", occurred_at=at(0)),
        event_doc("purchase", customer_id="hooked", event_id="h2", occurred_at=at(1)),
    )

    async def delivered() -> list[tuple[str, bytes]]:
        return list(Receiver.received)

    (signature, body), *_ = await eventually(delivered)
    assert verify_signature(secret, signature, body, now=time.time())
    assert not verify_signature("whsec_wrong", signature, body, now=time.time())
    assert not verify_signature(secret, signature, body, now=time.time() + 3600)
    payload = json.loads(body)
    assert (payload["customer_id"], payload["from"], payload["to"]) == (
        "hooked",
        "reach",
        "conversion",
    )
    listed = (await client.get("/v1/webhooks", headers=ADMIN)).json()["subscriptions"]
    assert listed[0]["deliveries"] == {"delivered": 1}
    assert "secret" not in listed[0]


async def test_failing_webhooks_are_retried_then_parked(
    common: CommonSettings, receiver: str, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLM_WEBHOOK_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("CLM_WEBHOOK_POLL_S", "0.05")
    Receiver.fail = True
    try:
        app = create_app(StageEngineSettings())
        async with app_client(app, "http://e") as c:
            await c.post("/v1/webhooks", json={"url": receiver}, headers=ADMIN)
            await send_events(
                common,
                event_doc("purchase", customer_id="unlucky", event_id="u1", occurred_at=at(0)),
            )

            async def parked() -> dict[str, int] | None:
                subs = (await c.get("/v1/webhooks", headers=ADMIN)).json()["subscriptions"]
                return subs[0]["deliveries"] if subs[0]["deliveries"].get("parked") else None

            assert await eventually(parked, timeout=30) == {"parked": 1}
        assert len(Receiver.received) == 2
    finally:
        Receiver.fail = False


class _Hanging(socketserver.BaseRequestHandler):
    """Reads a request and never answers (until the test ends)."""

    release = threading.Event()
    requests = 0

    def handle(self) -> None:
        self.request.recv(65536)
        type(self).requests += 1
        type(self).release.wait(timeout=120)


@pytest.fixture
def hanging() -> Iterator[str]:
    _Hanging.release = threading.Event()
    _Hanging.requests = 0
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Hanging)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    _Hanging.release.set()
    server.shutdown()
    server.server_close()


async def test_a_hanging_subscriber_does_not_delay_another(
    common: CommonSettings,
    receiver: str,
    hanging: str,
    db: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two subscribers, one that never answers: the other gets every delivery within a
    fraction of the POST deadline (one after the other, it would wait a deadline for each
    of the hanging one's); the hanging one's deliveries time out, are retried and parked."""
    timeout_s = 3.0
    monkeypatch.setenv("CLM_WEBHOOK_TIMEOUT_S", str(timeout_s))
    monkeypatch.setenv("CLM_WEBHOOK_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("CLM_WEBHOOK_POLL_S", "0.05")
    app = create_app(StageEngineSettings(stage_engine_idle_recheck_s=0.5))
    async with app_client(app, "http://e") as c:
        # the hanging one subscribed first: its deliveries come first in id order
        for url in (hanging, receiver):
            created = await c.post("/v1/webhooks", json={"url": url}, headers=ADMIN)
            assert created.status_code == 201, created.text
        await send_events(
            common,
            *(
                event_doc("purchase", customer_id=f"hk-{n}", event_id=f"hk{n}", occurred_at=at(0))
                for n in range(3)
            ),
        )
        for n in range(3):
            await eventually(functools.partial(read_customer, c, f"hk-{n}"), every=0.02)
        queued = time.monotonic()  # the deliveries commit with the customers' rows

        async def all_delivered() -> bool:
            return len(Receiver.received) >= 3

        await eventually(all_delivered, every=0.02)
        took = time.monotonic() - queued
        assert took < timeout_s / 2, f"the healthy subscriber waited {took:.1f}s"
        assert _Hanging.requests >= 1  # it was being tried meanwhile

        async def parked() -> dict[str, dict[str, int]] | None:
            subs = (await c.get("/v1/webhooks", headers=ADMIN)).json()["subscriptions"]
            by_url = {s["url"]: s["deliveries"] for s in subs}
            return by_url if by_url[hanging] == {"parked": 3} else None

        by_url = await eventually(parked, timeout=60)
        assert by_url[receiver] == {"delivered": 3}
        assert _Hanging.requests == 6  # each delivery tried max_attempts times
    async with db.connect() as conn:
        errors = (
            (
                await conn.execute(
                    text(
                        "SELECT DISTINCT last_error FROM webhook_deliveries WHERE status = 'parked'"
                    )
                )
            )
            .scalars()
            .all()
        )
    assert errors == [f"timed out after {timeout_s:g}s"]
    # one subscriber's deliveries went out one after the other, in the order they were queued
    async with db.connect() as conn:
        queued_order = [
            json.loads(bytes(p))["customer_id"]
            for (p,) in await conn.execute(
                text(
                    "SELECT d.payload FROM webhook_deliveries d "
                    "JOIN webhook_subscriptions s ON s.id = d.subscription_id "
                    "WHERE s.url = :url ORDER BY d.id"
                ),
                {"url": receiver},
            )
        ]
    assert [json.loads(body)["customer_id"] for _, body in Receiver.received] == queued_order


async def test_listing_by_stage_with_aliases_and_stable_cursors(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    await produce(
        common.kafka.bootstrap,
        common.topics.events,
        [
            wire(
                event_doc(
                    "purchase", customer_id=f"buyer-{i:02d}", event_id=f"l{i}", occurred_at=at(0)
                )
            )
            for i in range(7)
        ]
        + [wire(event_doc("site_visit", customer_id="visitor", event_id="lv", occurred_at=at(0)))],
    )
    await until_events(client, "visitor", 1)
    for i in range(7):
        await until_events(client, f"buyer-{i:02d}", 1)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"stage": "purchase", "limit": 3}  # the classic alias
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/customers", params=params, headers=READ)).json()
        seen.extend(c["customer_id"] for c in page["customers"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"buyer-{i:02d}" for i in range(7)]
    stages = (await client.get("/v1/stages", headers=READ)).json()["stages"]
    assert stages["conversion"] == 7
    assert stages["reach"] == 1
    bad = await client.get("/v1/customers", params={"stage": "nirvana"}, headers=READ)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "stage"


async def test_the_classic_vocabulary_is_a_setting(common: CommonSettings) -> None:
    await send_events(
        common, event_doc("site_visit", customer_id="classic", event_id="c1", occurred_at=at(0))
    )
    app = create_app(StageEngineSettings(stage_vocabulary="classic"))
    async with app_client(app, "http://e") as c:
        customer = await until_events(c, "classic", 1)
        assert customer["stage"] == "awareness"
        assert "advocacy" in (await c.get("/v1/stages", headers=READ)).json()["stages"]


def test_a_bad_rule_file_stops_the_engine_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "lifecycle.yaml"
    bad.write_text(
        "version: 1\nat_risk:\n  inactive_days: 90\nchurned:\n  inactive_days: 30\n  oops: 1\n"
    )
    with pytest.raises(RulesError, match=r"lifecycle.yaml:6: churned.oops"):
        create_app(StageEngineSettings(stage_engine_rules_path=bad))


async def test_merging_two_known_customers_is_explicit_and_later_events_follow(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    await send_events(
        common,
        event_doc(
            "ad_click",
            customer_id="dup-a",
            event_id="ma",
            occurred_at=at(0),
            channel="social",
        ),
        event_doc("purchase", customer_id="dup-b", event_id="mb", occurred_at=at(1)),
    )
    await until_events(client, "dup-a", 1)
    await until_events(client, "dup-b", 1)
    assert (
        await client.post("/v1/customers/dup-a/merge", json={"from": "dup-b"}, headers=READ)
    ).status_code == 403
    same = await client.post("/v1/customers/dup-a/merge", json={"from": "dup-a"}, headers=ADMIN)
    assert same.status_code == 422
    missing = await client.post("/v1/customers/dup-a/merge", json={"from": "nobody"}, headers=ADMIN)
    assert missing.status_code == 404
    merged = await client.post("/v1/customers/dup-a/merge", json={"from": "dup-b"}, headers=ADMIN)
    assert merged.status_code == 200, merged.text
    customer = merged.json()["customer"]
    assert (customer["stage"], customer["purchases"], customer["first_channel"]) == (
        "conversion",
        1,
        "social",
    )
    assert await read_customer(client, "dup-b") is None
    await send_events(
        common,
        event_doc(
            "purchase",
            customer_id="dup-b",
            event_id="mc",
            order_id="o-2",
            occurred_at=at(2),
        ),
    )
    after = await until_events(client, "dup-a", 3)
    assert (after["stage"], after["purchases"]) == ("retention", 2)
    assert await read_customer(client, "dup-b") is None


async def test_merging_two_buyers_restates_the_later_first_purchase(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    """Each profile's purchase was published as a first purchase; merged, the later one is
    the customer's second: a restatement says so (once, with the merge as its cause), taking
    back both profiles' timelines and adding the merged one."""
    await send_events(
        common,
        event_doc("purchase", customer_id="buyer-a", event_id="ba", occurred_at=at(1)),
        event_doc("purchase", customer_id="buyer-b", event_id="bb", occurred_at=at(2)),
    )
    await until_events(client, "buyer-a", 1)
    await until_events(client, "buyer-b", 1)
    merged = await client.post(
        "/v1/customers/buyer-a/merge", json={"from": "buyer-b"}, headers=ADMIN
    )
    assert merged.status_code == 200, merged.text
    assert merged.json()["customer"]["purchases"] == 2
    records = [
        orjson.loads(r.value)
        for r in await read_topic(common.kafka.bootstrap, common.topics.lifecycle, expect=5)
    ]
    assert sorted(r["kind"] for r in records) == [
        "customer_merge",
        "event",
        "event",
        "identity_merge",
        "restatement",
    ]
    (fix,) = [r for r in records if r["kind"] == "restatement"]
    assert fix["record_id"] == "restatement:buyer-a@merge:buyer-b>buyer-a#0"
    assert (fix["reason"], fix["customer_id"]) == ("customer merge", "buyer-a")
    flags = [
        (t["customer_id"], i["event"]["event_id"], i["first_purchase"], i["repeat_purchase"])
        for side in ("retract", "add")
        for t in fix[side]
        for i in t["items"]
    ]
    assert flags == [
        ("buyer-a", "ba", True, False),
        ("buyer-b", "bb", True, False),
        ("buyer-a", "ba", True, False),
        ("buyer-a", "bb", False, True),
    ]
    assert all(r["restated"] for r in records if r["kind"] in ("customer_merge", "identity_merge"))


@contextlib.asynccontextmanager
async def engine_and_metrics(
    receiver: str,
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """A stage engine and a metrics service in this process (clients of both), the engine's
    stage changes subscribed to by ``receiver``."""
    engine = create_app(StageEngineSettings(stage_engine_idle_recheck_s=0.5))
    metrics = metrics_app(MetricsSettings())
    async with app_client(engine, "http://e") as e, app_client(metrics, "http://m") as m:
        created = await e.post("/v1/webhooks", json={"url": receiver}, headers=ADMIN)
        assert created.status_code == 201, created.text
        yield e, m


async def test_an_explicit_merge_publishes_the_survivors_move_and_metrics_stay_equal(
    common: CommonSettings, receiver: str, db: AsyncEngine
) -> None:
    """Survivor in reach, the merged-away customer in conversion: the merge publishes the
    survivor's customer_merge record (reach → conversion) through the outbox and queues its
    stage-change webhook; the metrics service's customers per stage equal the engine's, also
    after a later move of the survivor (before, metrics kept it in reach and went negative)."""
    now = datetime.now(UTC)
    when = (now - timedelta(days=2)).isoformat()
    async with engine_and_metrics(receiver) as (e, m):
        await send_events(
            common,
            event_doc("ad_click", customer_id="mg-a", event_id="ga", occurred_at=when),
            event_doc("purchase", customer_id="mg-b", event_id="gb", occurred_at=when),
        )
        await until_events(e, "mg-a", 1)
        await until_events(e, "mg-b", 1)

        async def equal_counts() -> dict[str, int] | None:
            """The metrics' customers per stage, once they equal the engine's."""
            engine_counts = (await e.get("/v1/stages", headers=READ)).json()["stages"]
            kpis = (await m.get("/v1/kpis", params={"window": "30d"}, headers=READ)).json()
            counts: dict[str, int] = kpis["customers_by_stage"]
            return counts if counts == engine_counts else None

        assert (await eventually(equal_counts, timeout=60))["reach"] == 1

        merged = await e.post("/v1/customers/mg-a/merge", json={"from": "mg-b"}, headers=ADMIN)
        assert merged.status_code == 200, merged.text
        assert merged.json()["customer"]["stage"] == "conversion"

        async with db.connect() as conn:
            queued = [
                json.loads(bytes(p))
                for (p,) in await conn.execute(text("SELECT payload FROM webhook_deliveries"))
            ]
        moves = [(q["customer_id"], q["from"], q["to"], q["reason"]) for q in queued]
        assert ("mg-a", "reach", "conversion", "merged mg-b") in moves

        async def merge_announced() -> list[tuple[str, bytes]] | None:
            got = [r for r in Receiver.received if json.loads(r[1]).get("reason") == "merged mg-b"]
            return got or None

        (_, body), *_ = await eventually(merge_announced)
        assert json.loads(body)["customer_id"] == "mg-a"

        records = [
            orjson.loads(r.value)
            for r in await read_topic(common.kafka.bootstrap, common.topics.lifecycle, expect=4)
        ]
        (survivor,) = [r for r in records if r["kind"] == "customer_merge"]
        assert (survivor["customer_id"], survivor["merged"]) == ("mg-a", "mg-b")
        assert (survivor["stage_before"], survivor["stage_after"]) == ("reach", "conversion")
        assert survivor["customer"]["purchases"] == 1
        (gone,) = [r for r in records if r["kind"] == "identity_merge"]
        assert (gone["customer_id"], gone["stage_before"]) == ("mg-b", "conversion")

        after_merge = await eventually(equal_counts, timeout=60)
        assert (after_merge["reach"], after_merge["conversion"]) == (0, 1)

        # the survivor moves on: conversion → retention, counted from the right stage
        await send_events(
            common,
            event_doc(
                "purchase", customer_id="mg-a", event_id="gc", order_id="o-9", occurred_at=when
            ),
        )
        later = await eventually(
            lambda: _with_stage(equal_counts, "retention"),
            timeout=60,
        )
        assert min(later.values()) >= 0
        assert (later["conversion"], later["retention"]) == (0, 1)


async def _with_stage(
    probe: Callable[[], Awaitable[dict[str, int] | None]], stage: str
) -> dict[str, int] | None:
    counts = await probe()
    return counts if counts and counts.get(stage) else None


async def test_an_identity_merge_moves_the_survivor_on_its_event_record(
    common: CommonSettings, receiver: str, db: AsyncEngine
) -> None:
    """The implicit merge (an identify linking an anonymous buyer to a known visitor): the
    identify's own record carries the survivor's stage before and after, the move goes out
    as a webhook, and the metrics' customers per stage equal the engine's."""
    when = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    async with engine_and_metrics(receiver) as (e, m):
        anonymous = event_doc("purchase", customer_id=None, event_id="ip", occurred_at=when)
        anonymous["anonymous_id"] = "im-anon"
        await send_events(
            common,
            event_doc("site_visit", customer_id="im-k", event_id="iv", occurred_at=when),
            anonymous,
        )
        await until_events(e, "im-k", 1)
        await until_events(e, "im-anon", 1)
        identify = event_doc("identify", customer_id="im-k", event_id="ii", occurred_at=when)
        identify["anonymous_id"] = "im-anon"
        await send_events(common, identify)
        assert (await until_events(e, "im-k", 3))["stage"] == "conversion"

        records = [
            orjson.loads(r.value)
            for r in await read_topic(common.kafka.bootstrap, common.topics.lifecycle, expect=4)
        ]
        (survivor,) = [
            r for r in records if r["kind"] == "event" and r["event"]["event_id"] == "ii"
        ]
        assert (survivor["stage_before"], survivor["stage_after"]) == ("reach", "conversion")
        (gone,) = [r for r in records if r["kind"] == "identity_merge"]
        assert (gone["customer_id"], gone["stage_before"]) == ("im-anon", "conversion")

        async def announced() -> list[dict[str, Any]] | None:
            moves = [json.loads(body) for _, body in Receiver.received]
            found = [p for p in moves if p["customer_id"] == "im-k" and p["from"] == "reach"]
            return found or None

        (move,) = await eventually(announced)
        assert (move["to"], move["reason"]) == ("conversion", "identity merge")

        async def equal_counts() -> dict[str, int] | None:
            engine_counts = (await e.get("/v1/stages", headers=READ)).json()["stages"]
            kpis = (await m.get("/v1/kpis", params={"window": "30d"}, headers=READ)).json()
            counts: dict[str, int] = kpis["customers_by_stage"]
            return counts if counts == engine_counts and counts["reach"] == 0 else None

        counts = await eventually(equal_counts, timeout=60)
        assert (counts["conversion"], min(counts.values())) == (1, 0)
