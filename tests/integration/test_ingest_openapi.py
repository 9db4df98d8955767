"""Schemathesis over the ingest's OpenAPI schema, against the running app on the real broker.

Bounded: a few examples per operation, served once for the module. Every default check runs
(see ``openapi_fuzz``) but the one excluded below, with its reason.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import positive_data_acceptance

from clm_common.events import EventType
from clm_ingest.app import create_app
from clm_ingest.settings import IngestSettings
from tests.integration.conftest import NO_REQUEST_LIMITS, WRITE_KEY
from tests.integration.ingest_server import serving
from tests.integration.openapi_fuzz import bounded, load, with_credentials

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
