"""Schemathesis over the ingest's OpenAPI schema, against the running app on the real broker.

Bounded: a few examples per operation, served once for the module. Every default check runs
(see ``openapi_fuzz``) but the one excluded below, with its reason.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.checks import positive_data_acceptance

from clm_domain.events import EventType
from clm_ingest.app import create_app
from clm_ingest.settings import IngestSettings
from tests.integration.conftest import NO_REQUEST_LIMITS
from tests.integration.ingest_server import serving
from tests.integration.openapi_fuzz import bounded, load, with_credentials
from tests.keys import WRITE_KEY

schema = load(create_app(IngestSettings()))
# the operations whose body is an event of contract v1 (a union of 14 types)
EVENT_BODIES = "^/v1/(events|events/batch|webhooks/generic)$"
event_bodies = load(create_app(IngestSettings()), coverage=False)
BEARER = f"Bearer {WRITE_KEY}"
BASIC = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()


@schemathesis.serializer("text/plain")
def _json_as_text(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    """The browser library posts JSON with Content-Type text/plain."""
    return value if isinstance(value, bytes) else json.dumps(value).encode()


@pytest.fixture(scope="module")
def ingest_url(module_env: dict[str, str]) -> Iterator[str]:
    with serving(create_app(IngestSettings(ingest_rate_limit_per_s=0, **NO_REQUEST_LIMITS))) as url:
        yield url


def test_the_openapi_documents_an_example_for_every_event_type() -> None:
    doc = create_app(IngestSettings()).openapi()
    content = doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    assert set(content["examples"]) == {t.value for t in EventType}
    assert "Purchase" in doc["components"]["schemas"]


def check(case: schemathesis.Case[Any], ingest_url: str) -> None:
    headers = with_credentials(case, BEARER if case.path.startswith("/v1/events") else BASIC)
    # Not "schema-valid requests are accepted": what the ingest accepts depends on more than
    # the schema says — the write key's source (another one is 403), one of customer_id or
    # anonymous_id, ISO 4217 currencies, a time at most 24 h ahead, a Segment page's URL in
    # properties or context, a webhook's signature — and a refusal names the field (4xx).
    case.call_and_validate(
        base_url=ingest_url, headers=headers, excluded_checks=[positive_data_acceptance]
    )


@schema.exclude(path_regex=EVENT_BODIES).parametrize()
@bounded
def test_the_api_matches_its_schema(case: schemathesis.Case[Any], ingest_url: str) -> None:
    check(case, ingest_url)


@event_bodies.include(path_regex=EVENT_BODIES).parametrize()
@bounded
def test_the_event_endpoints_match_their_schema(
    case: schemathesis.Case[Any], ingest_url: str
) -> None:
    check(case, ingest_url)


def _deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


#: The contract's extremes (clm_domain.bounds), just outside each bound: what the fuzzing
#: phases are unlikely to draw, sent to every entry point of the ingest.
EXTREME_EVENTS: list[dict[str, Any]] = [
    {"occurred_at": "2026-12-07T10:00:00+16:00"},
    {"occurred_at": "0001-01-01T00:00:00+14:00"},
    {"occurred_at": "9999-12-31T23:59:59.999999-14:00"},
    {"occurred_at": "1969-12-31T23:59:59Z"},
    {"customer_id": "a/b"},
    {"customer_id": "a\x00b"},
    {"customer_id": ".."},
    {"event_id": "e" * 201},
    {"properties": {"order_id": "o-1", "amount": "1e30", "currency": "EUR"}},
    {"properties": {"order_id": "o-1", "amount": "100000000000000", "currency": "EUR"}},
    {"properties": {"order_id": "o-1", "amount": "59.90", "currency": "EUR", "x": _deep(300)}},
    {"properties": {"order_id": "o-1", "amount": "59.90", "currency": "EUR", "x": "a" * 20_000}},
    {
        "properties": {
            "order_id": "o-1",
            "amount": "59.90",
            "currency": "EUR",
            "items": [{"price": _deep(250)}],
        }
    },
]


def test_the_contracts_extremes_are_refused_by_every_entry_point_never_a_5xx(
    ingest_url: str,
) -> None:
    bearer = {"Authorization": BEARER}
    basic = {"Authorization": BASIC}
    base = {
        "event_id": "x-1",
        "type": "purchase",
        "customer_id": "c-1",
        "occurred_at": "2026-11-23T10:00:00Z",
        "properties": {"order_id": "o-1", "amount": "59.90", "currency": "EUR"},
    }
    deep_body = b'{"events": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    with httpx.Client(base_url=ingest_url, timeout=10) as http:
        for change in EXTREME_EVENTS:
            doc = {**base, **change}
            one = http.post("/v1/events", content=_dumps(doc), headers=_json(bearer))
            assert one.status_code == 422, (change, one.text)
            batch = http.post(
                "/v1/events/batch",
                content=_dumps({"events": [doc, {**base, "event_id": "ok-1"}]}),
                headers=_json(bearer),
            )
            assert batch.status_code == 202, (change, batch.text)
            assert [r["index"] for r in batch.json()["rejected"]] == [0]
        segment = [
            {"userId": "a/b", "event": "Thing"},
            {"userId": "u", "event": "Thing", "timestamp": "2026-12-07T10:00:00+16:00"},
            {"userId": "u", "event": "Thing", "context": {"x": _deep(300)}},
            {"userId": "u", "event": "Order Completed", "properties": {"total": 1e30}},
        ]
        for message in segment:
            answer = http.post("/v1/track", content=_dumps(message), headers=_json(basic))
            assert answer.status_code == 400, (message, answer.text)
        for path, headers in (("/v1/events", bearer), ("/v1/events/batch", bearer)):
            answer = http.post(path, content=deep_body, headers=_json(headers))
            assert answer.status_code == 422, (path, answer.text)
        for path in ("/v1/batch", "/v1/webhooks/generic", "/v1/webhooks/stripe"):
            answer = http.post(path, content=deep_body, headers=_json(basic))
            assert answer.status_code < 500, (path, answer.text)


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _json(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "Content-Type": "application/json"}
