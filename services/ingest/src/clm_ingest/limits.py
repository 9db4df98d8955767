"""Request body limits (Starlette has none by default) and gzip request bodies.

:class:`BodyLimitMiddleware` refuses bodies over the limit as sent (by Content-Length and
while streaming); :class:`GzipRequestMiddleware`, inside it, inflates ``Content-Encoding: gzip``
bodies (Segment's libraries send them) and refuses those that inflate past the limit (a small
"zip bomb" body cannot make us allocate more than ``max_bytes``).
"""

from __future__ import annotations

import zlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clm_ingest.refusals import refusal
from clm_web.asgi import header


class BodyTooLarge(Exception):
    pass


class _BodyMiddleware:
    """An ASGI middleware about HTTP request bodies of at most ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        else:
            await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError

    async def too_large(self, scope: Scope, receive: Receive, send: Send, detail: str) -> None:
        """Answer 413 (Content Too Large), saying why."""
        response = refusal(scope["path"], 413, "body_too_large", "Content Too Large", detail)
        await response(scope, receive, send)


class BodyLimitMiddleware(_BodyMiddleware):
    """Refuses bodies over ``max_bytes``, by Content-Length and while streaming."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = header(scope, b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                await self._refuse(scope, receive, send)
                return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.too_large(scope, receive, send, f"request body over {self.max_bytes} bytes")


class GzipRequestMiddleware(_BodyMiddleware):
    """Inflates gzip (and deflate) request bodies, at most ``max_bytes`` of them."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        encoding = (header(scope, b"content-encoding") or b"").strip().lower()
        if encoding in {b"", b"identity"}:
            await self.app(scope, receive, send)
            return
        if encoding not in {b"gzip", b"x-gzip", b"deflate"}:
            await refusal(
                scope["path"],
                415,
                "unsupported_encoding",
                "Unsupported Media Type",
                "Content-Encoding must be gzip, deflate or identity",
            )(scope, receive, send)
            return
        sent = await _whole_body(receive)
        if sent is None:
            return  # the client went away
        body = await self._inflated(scope, receive, send, sent, encoding)
        if body is None:
            return
        headers = [
            (k, v) for k, v in scope["headers"] if k not in {b"content-encoding", b"content-length"}
        ]
        headers.append((b"content-length", str(len(body)).encode()))
        scope["headers"] = headers  # in place: outer middleware sees the matched route
        await self.app(scope, _replaying(body, receive), send)

    async def _inflated(
        self, scope: Scope, receive: Receive, send: Send, sent: bytes, encoding: bytes
    ) -> bytes | None:
        """The inflated body; None once a refusal was sent (not valid, or inflates too far)."""
        # wbits 47: gzip or zlib header, detected; max_length bounds what we allocate
        inflater = zlib.decompressobj(wbits=47 if encoding != b"deflate" else 15)
        try:
            body = inflater.decompress(sent, self.max_bytes + 1)
        except zlib.error as exc:
            await refusal(
                scope["path"],
                400,
                "bad_encoding",
                "Bad Request",
                f"body is not valid {encoding.decode()}: {exc}",
            )(scope, receive, send)
            return None
        if len(body) > self.max_bytes or inflater.unconsumed_tail:
            detail = f"request body inflates past {self.max_bytes} bytes"
            await self.too_large(scope, receive, send, detail)
            return None
        return body


async def _whole_body(receive: Receive) -> bytes | None:
    """The request body as sent; None when the client went away first."""
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` whole, then whatever ``receive`` gives next."""
    delivered = False

    async def inflated() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return inflated
