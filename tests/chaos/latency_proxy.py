"""A TCP proxy that makes a server slow on demand (pure asyncio, no dependencies).

Put between the services and Postgres: while :attr:`LatencyProxy.slow` is set, every chunk
read from either side waits a random ``delay`` (seconds, drawn from a range) before it is
passed on, in order; otherwise chunks pass straight through. Connections opened while fast
stay open and turn slow with the switch, like a network that degrades under a running pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import random


class LatencyProxy:
    """Listens on 127.0.0.1 (a free port) and forwards to ``target_host:target_port``."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        delay: tuple[float, float] = (0.05, 0.2),
        seed: int = 0,
    ) -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        self.slow = False
        self.delayed_chunks = 0
        self._random = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "the proxy is not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> LatencyProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        pipes = [
            asyncio.create_task(self._pipe(client_r, server_w)),
            asyncio.create_task(self._pipe(server_r, client_w)),
        ]
        self._pipes.update(pipes)
        try:
            # either side closing ends the connection: close both, like a real hop would
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._pipes.difference_update(pipes)
            for writer in (client_w, server_w):
                writer.close()
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await writer.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(65536):
                if self.slow:
                    self.delayed_chunks += 1
                    await asyncio.sleep(self._random.uniform(*self.delay))
                writer.write(chunk)
                await writer.drain()
