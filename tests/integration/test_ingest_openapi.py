"""Schemathesis over the ingest's OpenAPI schema, against the running app on the real broker.

Bounded: a few examples per operation. Checks: no 5xx, every status is documented for its
operation, documented content types and response schemas hold.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from clm_common.events import EventType
from clm_common.settings import CommonSettings
from clm_ingest.app import create_app
from clm_ingest.settings import IngestSettings
from tests.integration.conftest import WRITE_KEY
from tests.integration.ingest_server import serving

schema = schemathesis.openapi.from_dict(create_app(IngestSettings()).openapi())
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
BEARER = {"Authorization": f"Bearer {WRITE_KEY}"}
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}


@schemathesis.serializer("text/plain")
def _json_as_text(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    """The browser library posts JSON with Content-Type text/plain."""
    return value if isinstance(value, bytes) else json.dumps(value).encode()


@pytest.fixture
def ingest_url(common: CommonSettings) -> Iterator[str]:
    with serving(create_app(IngestSettings(ingest_rate_limit_per_s=0))) as url:
        yield url


def test_the_openapi_documents_an_example_for_every_event_type() -> None:
    doc = create_app(IngestSettings()).openapi()
    content = doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    assert set(content["examples"]) == {t.value for t in EventType}
    assert "Purchase" in doc["components"]["schemas"]


@schema.exclude(path="/metrics").parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_api_matches_its_schema(case: schemathesis.Case[Any], ingest_url: str) -> None:
    headers = BASIC if not case.path.startswith(("/v1/events", "/v1/webhooks")) else BEARER
    case.call_and_validate(base_url=ingest_url, headers=headers, checks=CHECKS)
