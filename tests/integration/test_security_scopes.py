"""Issue 28's security cases, in process on the real Postgres and Kafka: key scopes, the
webhook URL policy, request limits on every service, the unknown-key flood, the key cache's
LRU, secrets and tombstones at rest."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain.pseudonyms import DEV_PSEUDONYM_KEY, Pseudonyms, legacy_hash
from clm_domain.rules import LifecycleRules
from clm_infra.db import create_engine
from clm_infra.keys import store_key
from clm_infra.schema import erasures, webhook_subscriptions
from clm_infra.settings import CommonSettings, RequestLimits
from clm_infra.subscription_secrets import open_secret
from clm_infra.webhook_secrets import cipher
from clm_infra.webhook_urls import UrlPolicy
from clm_ingest.app import create_app as ingest_app
from clm_ingest.settings import IngestRequestLimits, IngestSettings
from clm_metrics.app import create_app as metrics_app
from clm_metrics.settings import MetricsSettings
from clm_stage_engine import at_rest
from clm_stage_engine.app import create_app as stage_engine_app
from clm_stage_engine.handler import EventsHandler
from clm_stage_engine.settings import StageEngineSettings, WebhookSettings
from clm_stage_engine.webhooks import Dispatcher
from clm_web.auth import KeyVerifier
from tests.conftest import alembic_upgrade
from tests.factories import event_doc
from tests.integration.apps import running
from tests.integration.conftest import NO_REQUEST_LIMITS, eventually, send_events
from tests.integration.test_stage_engine_claims import records
from tests.keys import ADMIN, ADMIN_KEY, READ, READ_TOKEN, WRITE, WRITE_KEY

OTHER_READ_TOKEN = "it-other-read-token"
OTHER_READ = {"Authorization": f"Bearer {OTHER_READ_TOKEN}"}
PUBLIC_HOOK = "https://93.184.215.14/hook"  # an IP literal: resolves to itself, no DNS
#: the webhook policy of a production engine (the tests' environment allows local receivers)
STRICT: dict[str, Any] = {"webhooks": {"allow_insecure": False, "allowed_hosts": ""}}


@dataclass(frozen=True)
class Served:
    """An app with its lifespan entered: a client on it, its state, the ASGI app itself."""

    client: httpx.AsyncClient
    state: Any
    app: Any


@asynccontextmanager
async def entered(app: FastAPI, base_url: str) -> AsyncIterator[Served]:
    async with running(app) as asgi:
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield Served(client, app.state.clm, asgi)


@pytest.fixture
async def engine_api(common: CommonSettings) -> AsyncIterator[Served]:
    settings = StageEngineSettings(**STRICT, **NO_REQUEST_LIMITS)
    async with entered(stage_engine_app(settings), "http://engine") as served:
        yield served


async def subscriptions_of(db: AsyncEngine) -> list[Any]:
    async with db.connect() as conn:
        return list(await conn.execute(select(webhook_subscriptions)))


# ---------------------------------------------------------------------------- key scopes


async def test_a_write_key_can_erase_merge_subscribe_or_read_nothing(
    engine_api: Served, common: CommonSettings, db: AsyncEngine
) -> None:
    client = engine_api.client
    await send_events(
        common,
        event_doc("site_visit", customer_id="victim", event_id="v1"),
        event_doc("site_visit", customer_id="victim-b", event_id="v2"),
    )

    async def both() -> bool:
        a = await client.get("/v1/customers/victim", headers=READ)
        b = await client.get("/v1/customers/victim-b", headers=READ)
        return a.status_code == b.status_code == 200

    await eventually(both)
    refused = [
        await client.delete("/v1/customers/victim", headers=WRITE),
        await client.post("/v1/customers/victim/merge", json={"from": "victim-b"}, headers=WRITE),
        await client.post("/v1/webhooks", json={"url": PUBLIC_HOOK}, headers=WRITE),
        await client.get("/v1/webhooks", headers=WRITE),
        await client.delete("/v1/webhooks/1", headers=WRITE),
        await client.get("/v1/customers/victim", headers=WRITE),
        await client.get("/v1/customers", headers=WRITE),
        await client.get("/v1/stages", headers=WRITE),
        await client.get("/v1/customers/victim/history", headers=WRITE),
        await client.get("/v1/customers/victim/events", headers=WRITE),
        await client.get("/v1/customers/victim/export", headers=WRITE),
        # a read token changes nothing either
        await client.delete("/v1/customers/victim", headers=READ),
        await client.post("/v1/webhooks", json={"url": PUBLIC_HOOK}, headers=READ),
        # nor exports what is held about a customer (subject access: admin only)
        await client.get("/v1/customers/victim/export", headers=READ),
    ]
    for answer in refused:
        assert answer.status_code == 403, (answer.request.method, answer.request.url, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
    assert await subscriptions_of(db) == []
    assert (await client.get("/v1/customers/victim", headers=READ)).status_code == 200

    merged = await client.post(
        "/v1/customers/victim/merge", json={"from": "victim-b"}, headers=ADMIN
    )
    assert merged.status_code == 200, merged.text
    created = await client.post("/v1/webhooks", json={"url": PUBLIC_HOOK}, headers=ADMIN)
    assert created.status_code == 201, created.text
    listed = await client.get("/v1/webhooks", headers=ADMIN)
    assert [s["url"] for s in listed.json()["subscriptions"]] == [PUBLIC_HOOK]
    gone = await client.delete(f"/v1/webhooks/{created.json()['id']}", headers=ADMIN)
    assert gone.status_code == 200
    erased = await client.delete("/v1/customers/victim", headers=ADMIN)
    assert erased.status_code == 200, erased.text
    assert (await client.get("/v1/customers/victim", headers=READ)).status_code == 404


async def test_an_admin_key_does_not_post_events(common: CommonSettings) -> None:
    settings = IngestSettings(**NO_REQUEST_LIMITS)
    async with entered(ingest_app(settings), "http://ingest") as served:
        client = served.client
        answer = await client.post(
            "/v1/events", json=event_doc("site_visit", customer_id="c"), headers=ADMIN
        )
    assert answer.status_code == 403


# ---------------------------------------------------------------------------- SSRF


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://10.0.0.1/hook",
        "https://192.168.0.10/hook",
        "https://localhost/hook",  # a name resolving to loopback
        "https://[::ffff:127.0.0.1]/hook",  # IPv4-mapped IPv6
        "https://[::ffff:a9fe:a9fe]/hook",  # 169.254.169.254, mapped, in hex
        "https://0.0.0.0/hook",
        "https://2130706433/hook",  # 127.0.0.1 as one number
        "http://93.184.215.14/hook",  # public, but not https
    ],
)
async def test_ssrf_style_urls_are_refused_naming_the_url(
    engine_api: Served, db: AsyncEngine, url: str
) -> None:
    client = engine_api.client
    answer = await client.post("/v1/webhooks", json={"url": url}, headers=ADMIN)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in answer.json()["errors"]] == ["url"]
    assert await subscriptions_of(db) == []


async def test_the_allow_list_and_the_insecure_setting_let_a_local_receiver_in(
    common: CommonSettings,
) -> None:
    settings = StageEngineSettings(
        webhooks=WebhookSettings(allow_insecure=True, allowed_hosts="127.0.0.1"),
        **NO_REQUEST_LIMITS,
    )
    async with entered(stage_engine_app(settings), "http://engine") as served:
        client = served.client
        ok = await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/h"}, headers=ADMIN)
        other = await client.post("/v1/webhooks", json={"url": "http://10.0.0.1/h"}, headers=ADMIN)
    assert ok.status_code == 201, ok.text
    assert other.status_code == 422


async def test_a_delivery_to_a_url_now_refused_is_not_attempted(
    common: CommonSettings, db: AsyncEngine
) -> None:
    """A row that names a private address (subscribed under another policy, or a host whose
    DNS changed) is refused before any connection."""
    box = cipher(common)
    dispatcher = Dispatcher(
        db, timeout_s=1, max_attempts=3, poll_s=1, url_policy=UrlPolicy(), secrets_box=box
    )
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.path == "/moved":  # a subscriber redirecting to the metadata service
            return httpx.Response(302, headers={"Location": "http://169.254.169.254/"})
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        error = await dispatcher._post(http, "https://169.254.169.254/x", "whsec_s", b"{}")
        assert error is not None
        assert error.startswith("refused")
        assert requests == []
        assert await dispatcher._post(http, PUBLIC_HOOK, "whsec_s", b"{}") is None
        moved = "https://93.184.215.14/moved"
        assert await dispatcher._post(http, moved, "whsec_s", b"{}") == "HTTP 302"
    assert [str(r.url) for r in requests] == [PUBLIC_HOOK, moved]  # the redirect not followed


# ---------------------------------------------------------------------------- limits


async def store_other_read_token(db: AsyncEngine) -> None:
    async with db.begin() as conn:
        await store_key(conn, key=OTHER_READ_TOKEN, kind="read", source="bi")


async def test_a_key_over_its_limit_gets_429_and_another_key_does_not(
    common: CommonSettings, db: AsyncEngine
) -> None:
    await store_other_read_token(db)
    settings = StageEngineSettings(
        limits=RequestLimits(key_per_s=0.5, key_burst=3, address_per_s=0)
    )
    async with entered(stage_engine_app(settings), "http://engine") as served:
        client = served.client
        answers = [(await client.get("/v1/stages", headers=READ)).status_code for _ in range(4)]
        limited = await client.get("/v1/customers/anyone", headers=READ)  # the hot read too
        other = await client.get("/v1/stages", headers=OTHER_READ)
    assert answers == [200, 200, 200, 429]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["content-type"] == "application/problem+json"
    assert limited.json()["status"] == 429
    assert other.status_code == 200


async def test_the_metrics_api_is_limited_per_key(common: CommonSettings, db: AsyncEngine) -> None:
    await store_other_read_token(db)
    settings = MetricsSettings(limits=RequestLimits(key_per_s=0.5, key_burst=2))
    async with entered(metrics_app(settings), "http://metrics") as served:
        client = served.client
        answers = [
            (await client.get("/v1/kpis", params={"window": "7d"}, headers=READ)).status_code
            for _ in range(3)
        ]
        other = await client.get("/v1/kpis", params={"window": "7d"}, headers=OTHER_READ)
        writer = await client.get("/v1/kpis", params={"window": "7d"}, headers=WRITE)
    assert answers == [200, 200, 429]
    assert other.status_code == 200
    assert writer.status_code == 403  # a write key reads no KPIs either


async def test_provider_webhooks_are_limited_per_address(common: CommonSettings) -> None:
    settings = IngestSettings(limits=IngestRequestLimits(address_per_s=0.5, address_burst=2))
    async with entered(ingest_app(settings), "http://ingest") as served:
        client = served.client
        answers = [await client.post("/v1/webhooks/stripe", content=b"{}") for _ in range(3)]
        health = await client.get("/healthz")
    assert [a.status_code == 429 for a in answers] == [False, False, True]
    assert "retry-after" in answers[2].headers
    assert health.status_code == 200  # probes are not limited


async def test_a_flood_of_unknown_keys_costs_no_lookup_past_its_burst(
    common: CommonSettings,
) -> None:
    settings = StageEngineSettings(
        limits=RequestLimits(failed_auth_per_s=0.1, failed_auth_burst=5), **STRICT
    )
    async with entered(stage_engine_app(settings), "http://engine") as served:
        client, state = served.client, served.state
        statuses = []
        for _ in range(60):
            random_key = {"Authorization": f"Bearer clmr_{uuid.uuid4().hex}"}
            statuses.append((await client.get("/v1/stages", headers=random_key)).status_code)
        lookups = state.verifier.lookups
        # a known key from another address is not held back by the flood
        transport = httpx.ASGITransport(app=served.app, client=("10.9.9.9", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://engine") as elsewhere:
            fine = await elsewhere.get("/v1/stages", headers=READ)
    assert statuses[:5] == [401] * 5
    assert set(statuses[5:]) == {429}
    assert lookups == 5
    assert fine.status_code == 200


async def test_the_key_cache_evicts_the_least_recently_used_key_not_all(
    common: CommonSettings, db: AsyncEngine
) -> None:
    verifier = KeyVerifier(db, max_entries=3)
    for key in (READ_TOKEN, WRITE_KEY, ADMIN_KEY):
        assert await verifier.verify(key) is not None
    assert await verifier.verify(READ_TOKEN) is not None  # most recent now
    assert verifier.lookups == 3
    for n in range(2):  # unknown keys: cached as unknown, each evicting the oldest
        assert await verifier.verify(f"nope-{n}") is None
    assert len(verifier) == 3
    assert await verifier.verify("nope-1") is None  # a repeated unknown key: no lookup
    assert await verifier.verify(READ_TOKEN) is not None  # kept
    assert verifier.lookups == 5
    assert await verifier.verify(WRITE_KEY) is not None  # evicted first: looked up again
    assert verifier.lookups == 6


# ---------------------------------------------------------------------------- at rest


async def test_subscription_secrets_are_not_stored_in_clear(
    engine_api: Served, common: CommonSettings, db: AsyncEngine
) -> None:
    client = engine_api.client
    created = await client.post("/v1/webhooks", json={"url": PUBLIC_HOOK}, headers=ADMIN)
    secret = created.json()["secret"]
    async with db.connect() as conn:
        dump = (
            await conn.execute(text("SELECT row_to_json(w)::text FROM webhook_subscriptions w"))
        ).scalar_one()
    assert secret not in dump
    (row,) = await subscriptions_of(db)
    assert open_secret(cipher(common), row.secret) == secret


async def test_a_tombstone_is_a_keyed_hash(
    engine_api: Served, common: CommonSettings, db: AsyncEngine
) -> None:
    client = engine_api.client
    await send_events(common, event_doc("site_visit", customer_id="gdpr@example.com"))

    async def there() -> bool:
        return (await client.get("/v1/customers/gdpr@example.com", headers=READ)).status_code == 200

    await eventually(there)
    assert (await client.delete("/v1/customers/gdpr@example.com", headers=ADMIN)).status_code == 200
    async with db.connect() as conn:
        rows = (await conn.execute(select(erasures.c.customer_hash, erasures.c.keyed))).all()
    bare = hashlib.sha256(b"gdpr@example.com").hexdigest()
    keyed = hmac.new(DEV_PSEUDONYM_KEY.encode(), bare.encode(), hashlib.sha256).hexdigest()
    assert rows == [(keyed, True)]


async def test_old_tombstones_and_clear_secrets_are_upgraded_and_still_work(
    common: CommonSettings, db: AsyncEngine
) -> None:
    """What a version before the keyed hashes left: a bare SHA-256 tombstone and a secret in
    clear. After the upgrade the erased customer's old events are still dropped."""
    async with db.begin() as conn:
        await conn.execute(
            erasures.insert().values(customer_hash=legacy_hash("old-erased"), keyed=False)
        )
        await conn.execute(
            webhook_subscriptions.insert().values(url=PUBLIC_HOOK, secret="whsec_clear-one")
        )
    pseudonyms = Pseudonyms("s" * 40)
    box = cipher(common)
    assert await at_rest.upgrade(db, pseudonyms, box) == (1, 1)
    assert await at_rest.upgrade(db, pseudonyms, box) == (0, 0)  # idempotent
    async with db.connect() as conn:
        tombstones = (await conn.execute(select(erasures.c.customer_hash, erasures.c.keyed))).all()
        (stored,) = (await conn.execute(select(webhook_subscriptions.c.secret))).scalars()
    assert tombstones == [(pseudonyms.tombstone("old-erased"), True)]
    assert stored != "whsec_clear-one"
    assert open_secret(box, stored) == "whsec_clear-one"

    handler = EventsHandler("lifecycle", LifecycleRules(), pseudonyms=pseudonyms)
    before = records(
        event_doc("purchase", customer_id="old-erased", occurred_at="2020-01-01T00:00:00Z")
    )
    async with db.begin() as conn:
        assert (await handler(conn, before)).applied == 0


async def test_migration_0012_keeps_old_tombstones_unkeyed_and_allows_admin_keys(
    bare_database: str,
) -> None:
    await asyncio.to_thread(alembic_upgrade, bare_database, "upgrade", "0010_lapsing_index")
    db = create_engine(bare_database, pool_size=1)
    try:
        async with db.begin() as conn:
            await conn.execute(
                text("INSERT INTO erasures (customer_hash) VALUES (:h)"), {"h": legacy_hash("c")}
            )
            with pytest.raises(IntegrityError):  # no admin kind before
                async with conn.begin_nested():
                    await store_key(conn, key="a-1", kind="admin", source="ops")
        await asyncio.to_thread(alembic_upgrade, bare_database, "upgrade", "0012_key_scopes")
        async with db.begin() as conn:
            await store_key(conn, key="a-1", kind="admin", source="ops")
            rows = (await conn.execute(select(erasures.c.customer_hash, erasures.c.keyed))).all()
        assert rows == [(legacy_hash("c"), False)]  # for the engine to rehash at start
        await asyncio.to_thread(alembic_upgrade, bare_database, "downgrade", "0010_lapsing_index")
        async with db.connect() as conn:
            kinds = (await conn.execute(text("SELECT kind FROM api_keys"))).scalars().all()
        assert kinds == []
    finally:
        await db.dispose()
