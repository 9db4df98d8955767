"""Small ASGI pieces for the routes our services answer without FastAPI's router."""

from __future__ import annotations

from starlette.types import Scope, Send


async def send_json(send: Send, status: int, body: bytes) -> None:
    """Answer ``status`` with ``body``, already JSON."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> bytes | None:
    """The last value of a request header (names are lower-case in ASGI)."""
    found = None
    for key, value in scope.get("headers", []):
        if key == name:
            found = value
    return found
