"""Calls to the services' HTTP APIs, with their failures turned into operator messages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, Any

import httpx

from clm_cli.errors import CliError
from clm_cli.settings import CliSettings, Service

TIMEOUT_S = 10.0


class NotFound(Exception):
    """The service answered 404 (the caller words it: unknown customer, unknown KPI …)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def problem_text(response: httpx.Response) -> str:
    """``title: detail`` of a problem+json body, and the fields it names; else the raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if not isinstance(body, dict):
        return str(body)[:300]
    text = str(body.get("detail") or body.get("title") or response.reason_phrase)
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        fields = [f"{e.get('field', '?')}: {e.get('message', '')}" for e in errors[:5]]
        text += " (" + "; ".join(fields) + ")"
    return text


def raise_for(service: Service, response: httpx.Response, *, key_kind: str) -> None:
    """Map a non-2xx answer to NotFound or a CliError that says what to do."""
    status = response.status_code
    if status < 300:
        return
    detail = problem_text(response)
    if status == 404:
        raise NotFound(detail)
    if status in (401, 403):
        variable = {"read": "CLM_READ_TOKEN", "admin": "CLM_ADMIN_KEY"}.get(
            key_kind, "CLM_WRITE_KEY"
        )
        raise CliError(
            f"the {service.name} refused the {key_kind} key ({status}: {detail}) — set "
            f"{variable} or pass --token (new one: clm keys create --kind {key_kind} "
            "--source NAME)",
            2,
        )
    if status < 500:
        raise CliError(f"the {service.name} refused the request ({status}: {detail})")
    raise CliError(f"the {service.name} failed ({status}: {detail}) — see its log", 1)


async def request(
    service: Service,
    method: str,
    path: str,
    *,
    token: str | None,
    key_kind: str = "read",
    params: dict[str, Any] | None = None,
    body: Any = None,
    timeout_s: float = TIMEOUT_S,
) -> Any:
    """One call (with ``body`` as its JSON body, if given); the decoded JSON body of a 2xx
    answer."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        reaching(service),
        httpx.AsyncClient(base_url=service.url, timeout=timeout_s) as client,
    ):
        response = await client.request(method, path, params=params, json=body, headers=headers)
    raise_for(service, response, key_kind=key_kind)
    return response.json()


@asynccontextmanager
async def reaching(service: Service) -> AsyncIterator[None]:
    """A call to ``service``: its timeouts and connection failures as operator messages."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise CliError(
            f"the {service.name} at {service.url} did not answer in time ({exc})", 2
        ) from exc
    except httpx.TransportError as exc:
        raise CliError(
            f"cannot reach the {service.name} at {service.url} ({exc}) — is it running? "
            f"(make run, or set {service.variable})",
            2,
        ) from exc


async def download(
    service: Service, path: str, out: IO[bytes], *, token: str | None, key_kind: str
) -> int:
    """GET ``path`` and write its 2xx body to ``out`` as it comes (any size, a chunk at a
    time; ``TIMEOUT_S`` bounds each wait, not the whole); the bytes written."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    written = 0
    async with (
        reaching(service),
        httpx.AsyncClient(base_url=service.url, timeout=TIMEOUT_S) as client,
        client.stream("GET", path, headers=headers) as response,
    ):
        if response.status_code >= 300:
            await response.aread()
            raise_for(service, response, key_kind=key_kind)
        async for chunk in response.aiter_bytes():
            out.write(chunk)
            written += len(chunk)
    return written


async def admin_request(
    settings: CliSettings, method: str, path: str, token: str | None, body: Any = None
) -> Any:
    """A call to the stage engine with the admin key (``token``, else the configured one)."""
    return await request(
        settings.stage_engine(),
        method,
        path,
        token=settings.token("admin", token),
        key_kind="admin",
        body=body,
    )
