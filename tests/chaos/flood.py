"""A request flood from a process of its own: ``python -m tests.chaos.flood URL KEY SECONDS
CONNECTIONS`` posts single events with one write key as fast as CONNECTIONS keep-alive
connections allow, then prints a JSON summary (answers by status, 429s lacking
``Retry-After``).

A separate process with prebuilt HTTP/1.1 requests on raw sockets: a flooder sits on another
machine in life, so its own CPU here should be as small as it can be, not slow the ingest.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import time
from urllib.parse import urlsplit

import orjson


def request_bytes(host: str, key: str) -> bytes:
    body = orjson.dumps(
        {
            "event_id": "flood-1",  # the same one: whatever gets through counts once
            "type": "site_visit",
            "anonymous_id": "flooder",
            "properties": {"url": "https://shop.example/"},
        }
    )
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def flood(url: str, key: str, seconds: float, connections: int) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = request_bytes(f"{host}:{port}", key)
    statuses: collections.Counter[int] = collections.Counter()
    no_retry_after = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal no_retry_after
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.monotonic() < deadline:
                writer.write(request)
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                status = int(head.split(" ", 2)[1])
                length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
                await reader.readexactly(length)
                statuses[status] += 1
                if status == 429 and "\r\nretry-after:" not in head:
                    no_retry_after += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return {"statuses": {str(k): v for k, v in statuses.items()}, "no_retry_after": no_retry_after}


def main(argv: list[str]) -> None:
    url, key, seconds, connections = argv[0], argv[1], float(argv[2]), int(argv[3])
    summary = asyncio.run(flood(url, key, seconds, connections))
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
