"""RFC 9457 problem details (``application/problem+json``) for every error we answer."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from clm_infra.db import unavailable

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
UNAVAILABLE_RETRY_AFTER_S = 5  # Retry-After of a 503 while Postgres is unavailable


class ProblemError(Exception):
    """Raise to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = list(errors or [])
        self.headers = dict(headers or {})


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    instance: str | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = list(errors)
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_JSON
    )


def raised_problem(exc: ProblemError, instance: str) -> JSONResponse:
    """The answer to a raised :class:`ProblemError` (``instance``: the request's path)."""
    return problem_response(
        exc.status,
        exc.title,
        exc.detail,
        errors=exc.errors,
        headers=exc.headers,
        instance=instance,
    )


def _field_of(loc: Sequence[int | str]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:] or parts
    return ".".join(parts) or "body"


def install_problem_handlers(app: FastAPI) -> None:
    """Every error path of the app answers problem+json; nothing leaks a stack trace."""
    app.exception_handler(ProblemError)(_problem)
    app.exception_handler(RequestValidationError)(_validation)
    app.exception_handler(StarletteHTTPException)(_http)
    app.exception_handler(Exception)(_unexpected)
    # the types a database outage is raised as (``unavailable`` tells it from other errors)
    for kind in (OSError, TimeoutError, sa_exc.SQLAlchemyError, asyncpg.PostgresError):
        app.add_exception_handler(kind, _database)


async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
    return raised_problem(exc, request.url.path)


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"field": _field_of(e.get("loc", ())), "message": e.get("msg", "invalid")}
        for e in exc.errors()
    ]
    return problem_response(
        422,
        "Invalid request",
        "; ".join(f"{e['field']}: {e['message']}" for e in errors),
        errors=errors,
        instance=request.url.path,
    )


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return problem_response(
        exc.status_code,
        _title(exc.status_code),
        str(exc.detail) if exc.detail else None,
        headers=headers,
        instance=request.url.path,
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", extra={"path": request.url.path})
    return problem_response(500, "Internal Server Error", instance=request.url.path)


async def _database(request: Request, exc: Exception) -> JSONResponse:
    if not unavailable(exc):
        return await _unexpected(request, exc)
    return database_unavailable(exc, request.url.path)


def database_unavailable(exc: BaseException, path: str) -> JSONResponse:
    """The 503 for an error that says Postgres is unavailable (see :func:`unavailable`)."""
    log.warning("Postgres unavailable", extra={"path": path, "why": repr(exc)[:300]})
    return problem_response(
        503,
        "Service Unavailable",
        "the database is unavailable; retry after Retry-After seconds",
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
        instance=path,
    )


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers on this path.

    Starlette's own 405 names only the first route that matched the path, so a path served by
    two routes (``GET`` and ``DELETE /v1/customers/{id}``) would claim to allow just one.
    """
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; `errors` names each offending field.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
_PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
_FASTAPI_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")


_RATE_LIMITED: dict[str, Any] = {
    "description": "a request limit (per key or per address); retry after Retry-After seconds",
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
}


def document_problems(doc: dict[str, Any], *, bearer: str | None = None) -> dict[str, Any]:
    """Make an OpenAPI document say what the app answers on errors: every 4xx/5xx response
    without a body schema of its own is ``application/problem+json`` (FastAPI documents its
    422 as ``application/json`` ``HTTPValidationError``, which we never send).

    ``bearer`` names the HTTP bearer scheme every ``/v1/`` operation that states no security
    of its own requires (our keys and tokens: ``Authorization: Bearer …``). Every ``/v1/``
    operation may answer 429 (the request limits, :mod:`clm_web.request_limits`).
    """
    schemes = doc.setdefault("components", {}).setdefault("securitySchemes", {})
    if bearer is not None:
        schemes[bearer] = {"type": "http", "scheme": "bearer"}
    for path, item in doc.get("paths", {}).items():
        for operation in item.values():
            if bearer is not None and path.startswith("/v1/"):
                operation.setdefault("security", [{bearer: []}])
            if path.startswith("/v1/"):
                operation["responses"].setdefault("429", dict(_RATE_LIMITED))
            if "requestBody" in operation:  # FastAPI answers 400 to a body it cannot parse
                operation["responses"].setdefault("400", {"description": "body is not JSON"})
            for status, response in operation.get("responses", {}).items():
                if str(status)[:1] not in {"4", "5"}:
                    continue
                response.setdefault("description", _title(int(status)))
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if schema is None or schema == {} or _is_fastapi_error(schema):
                    response["content"] = _PROBLEM_CONTENT
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_ERROR_SCHEMAS:
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    return doc


def _is_fastapi_error(schema: Mapping[str, Any]) -> bool:
    ref = str(schema.get("$ref", ""))
    return any(ref.endswith(f"/{name}") for name in _FASTAPI_ERROR_SCHEMAS)


def install_problem_openapi(app: FastAPI, *, bearer: str | None = None) -> None:
    """The app's ``/openapi.json`` with its error answers (and ``bearer`` security)
    documented (:func:`document_problems`)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                ),
                bearer=bearer,
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
