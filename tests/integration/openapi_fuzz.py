"""Schemathesis with its whole default set of checks over one service's OpenAPI document.

Every built-in check runs (no ``checks=`` list): no 5xx, every status documented, content
types, response headers and schemas as documented, schema-violating requests refused and
conforming ones accepted, missing required headers refused, unsupported methods 405 with
``Allow``, requests without credentials refused, resources gone after a DELETE. A check that
does not apply to a service is excluded where the test calls it, with the reason.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.schemas import OpenApiSchema

#: Bounded: the three services' runs together add well under a minute to the suite.
bounded = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


def load(app: FastAPI, *, coverage: bool = True) -> OpenApiSchema:
    """The app's OpenAPI document as schemathesis sees it, with our status conventions:
    a request that is too large for us (an over-long batch) is ``413`` — a rejection too.

    ``coverage=False`` skips schemathesis's coverage phase (every boundary value of every
    field, deterministically): over the 14-type event union it makes hundreds of requests per
    operation (~50 s each); the examples and the fuzzing phases still run there.
    """
    schema: Any = schemathesis.openapi.from_dict(app.openapi())
    schema.config.phases.coverage.enabled = coverage
    checks = schema.config.checks
    checks.negative_data_rejection.expected_statuses = [
        *checks.negative_data_rejection.expected_statuses,
        "413",
    ]
    loaded: OpenApiSchema = schema
    return loaded


def with_credentials(case: schemathesis.Case[Any], real: str) -> dict[str, str]:
    """The case's headers with its generated credential replaced by ``real`` (a whole
    ``Authorization`` value) when it is one of the same scheme; a missing or malformed one is
    left as generated, so a negative case about credentials stays one (and meets a 401)."""
    headers = {str(k): str(v) for k, v in (case.headers or {}).items()}
    scheme = real.split(" ", 1)[0].lower()
    for name, value in headers.items():
        if name.lower() == "authorization" and value.split(" ", 1)[0].lower() == scheme:
            headers[name] = real
    return headers
