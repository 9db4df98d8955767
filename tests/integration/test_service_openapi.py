"""Schemathesis over the stage engine's and the metrics service's OpenAPI, every check on.

Each app is served over real HTTP with its lifespan (consumers on the real broker, the real
Postgres), once per module; read operations present the read token, the others the admin key
(the request limits off: the fuzzing is one client sending as fast as it can).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.checks import positive_data_acceptance

from clm_metrics.app import create_app as metrics_app
from clm_metrics.settings import MetricsSettings
from clm_stage_engine.app import create_app as stage_engine_app
from clm_stage_engine.settings import StageEngineSettings
from tests.integration.conftest import NO_REQUEST_LIMITS
from tests.integration.ingest_server import serving
from tests.integration.openapi_fuzz import bounded, load, with_credentials
from tests.keys import ADMIN, ADMIN_KEY, READ, READ_TOKEN

stage_engine_schema = load(stage_engine_app(StageEngineSettings()))
metrics_schema = load(metrics_app(MetricsSettings()))


def key_for(case: schemathesis.Case[Any]) -> dict[str, str]:
    admin_only = "webhooks" in case.path or case.path.endswith("/export")
    token = READ_TOKEN if case.method.upper() == "GET" and not admin_only else ADMIN_KEY
    return with_credentials(case, f"Bearer {token}")


@pytest.fixture(scope="module")
def stage_engine_url(module_env: dict[str, str]) -> Iterator[str]:
    with serving(stage_engine_app(StageEngineSettings(**NO_REQUEST_LIMITS))) as url:
        yield url


@pytest.fixture(scope="module")
def metrics_url(module_env: dict[str, str]) -> Iterator[str]:
    with serving(metrics_app(MetricsSettings(**NO_REQUEST_LIMITS))) as url:
        yield url


# Rules OpenAPI cannot state: a schema-valid request may break them and is then refused (422,
# documented), so "schema-valid requests are accepted" does not hold for these operations.
RULES_BEYOND_THE_SCHEMA = {
    "GET /v1/customers",  # `cursor` is opaque: only a `next_cursor` we gave is one
    "GET /v1/customers/{customer_id}/events",  # `after` is opaque: only a `next` we gave
    "POST /v1/customers/{customer_id}/merge",  # `from` must differ from the path's customer
    "POST /v1/webhooks",  # the URL's host must resolve, to public addresses only (SSRF)
    "POST /v1/segments",  # the condition's language (docs/segments.md), at most N segments
    "PATCH /v1/segments/{segment_id}",  # the same
    "GET /v1/segments/{segment_id}/history",  # to after from, within bounds, <= 1000 buckets
    "GET /v1/kpis",  # window or from+to (together, to after from), within 731 days
    "GET /v1/kpis/{name}/series",  # the same, and at most 400 steps
    "GET /v1/lifecycle/map",  # the same as /v1/kpis
}


def check(case: schemathesis.Case[Any], base_url: str) -> None:
    """Every default check, but positive-data acceptance where a cross-field rule applies."""
    excluded = [positive_data_acceptance] if case.operation.label in RULES_BEYOND_THE_SCHEMA else []
    case.call_and_validate(base_url=base_url, headers=key_for(case), excluded_checks=excluded)


@stage_engine_schema.parametrize()
@bounded
def test_the_stage_engine_matches_its_schema(
    case: schemathesis.Case[Any], stage_engine_url: str
) -> None:
    check(case, stage_engine_url)


@metrics_schema.parametrize()
@bounded
def test_the_metrics_service_matches_its_schema(
    case: schemathesis.Case[Any], metrics_url: str
) -> None:
    check(case, metrics_url)


def test_control_characters_in_ids_are_422_not_a_database_error(
    stage_engine_url: str, metrics_url: str
) -> None:
    """Found by the fuzzing: a NUL in an id reached Postgres (whose text cannot hold one) and
    came back as a 500."""
    nul_cursor = base64.urlsafe_b64encode(b"a\x00b").decode()
    with httpx.Client(timeout=10) as http:
        answers = [
            http.get(f"{stage_engine_url}/v1/customers/a%00b", headers=READ),
            http.get(f"{stage_engine_url}/v1/customers/a%00b/history", headers=READ),
            http.get(f"{stage_engine_url}/v1/customers?cursor={nul_cursor}", headers=READ),
            http.post(
                f"{stage_engine_url}/v1/customers/c-1/merge", json={"from": "a\x00b"}, headers=ADMIN
            ),
            http.get(f"{metrics_url}/v1/kpis?source=a%00b", headers=READ),
            http.get(f"{metrics_url}/v1/lifecycle/map?channel=a%01b", headers=READ),
        ]
    for response in answers:
        assert response.status_code == 422, (response.request.url, response.text)
        assert response.headers["content-type"] == "application/problem+json"


#: Times just outside the contract's bounds (clm_domain.bounds), and beyond the calendar once
#: in UTC: what the fuzzing phases are unlikely to draw.
EXTREME_TIMES = (
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59.999999-14:00",
    "2026-12-07T10:00:00+16:00",
    "1969-12-31T23:59:59Z",
    "9900-01-01T00:00:00Z",
)
FAIR = {"from": "2026-11-22T00:00:00Z", "to": "2026-11-23T00:00:00Z"}


def test_the_contracts_extremes_are_422_never_a_5xx(
    stage_engine_url: str, metrics_url: str
) -> None:
    with httpx.Client(timeout=10) as http:
        for at in EXTREME_TIMES:
            for name in ("from", "to"):
                params = {**FAIR, name: at}
                for path in ("/v1/kpis", "/v1/lifecycle/map", "/v1/kpis/revenue/series"):
                    answer = http.get(f"{metrics_url}{path}", params=params, headers=READ)
                    assert answer.status_code == 422, (path, params, answer.text)
                    assert [e["field"] for e in answer.json()["errors"]] == [name]
        answers = [
            http.get(f"{stage_engine_url}/v1/customers/{'i' * 201}", headers=READ),
            http.get(f"{stage_engine_url}/v1/customers/a%7Fb", headers=READ),
            http.get(f"{stage_engine_url}/v1/customers/a%C2%85b/history", headers=READ),
            http.post(
                f"{stage_engine_url}/v1/customers/c-1/merge", json={"from": "a\x9fb"}, headers=ADMIN
            ),
            http.get(f"{metrics_url}/v1/kpis", params={"source": "a\x7f"}, headers=READ),
        ]
    for response in answers:
        assert response.status_code == 422, (response.request.url, response.text)
