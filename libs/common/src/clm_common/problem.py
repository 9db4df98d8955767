"""RFC 9457 problem details (``application/problem+json``) for every error we answer."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from clm_common.db import unavailable

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


def _field_of(loc: Sequence[int | str]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:] or parts
    return ".".join(parts) or "body"


def install_problem_handlers(app: FastAPI) -> None:
    """Every error path of the app answers problem+json; nothing leaks a stack trace."""

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(
            exc.status,
            exc.title,
            exc.detail,
            errors=exc.errors,
            headers=exc.headers,
            instance=request.url.path,
        )

    @app.exception_handler(RequestValidationError)
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

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(
            exc.status_code,
            _title(exc.status_code),
            str(exc.detail) if exc.detail else None,
            headers=exc.headers,
            instance=request.url.path,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return problem_response(500, "Internal Server Error", instance=request.url.path)

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        if not unavailable(exc):
            return await _unexpected(request, exc)
        return database_unavailable(exc, request.url.path)

    # the types a database outage is raised as (``unavailable`` tells it from other errors)
    for kind in (OSError, TimeoutError, sa_exc.SQLAlchemyError, asyncpg.PostgresError):
        app.add_exception_handler(kind, _database)


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
