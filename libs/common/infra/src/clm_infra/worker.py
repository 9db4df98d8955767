"""Supervising a Kafka worker: (re)build its clients until the broker answers, run, restart;
and a process's set of workers, started and stopped together (:class:`Workers`).

A service's HTTP side stays up while Kafka is away; its readiness says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Supervisor:
    """Runs ``attempt`` again after a failure, with capped backoff, until stopped.

    ``attempt`` builds its clients, runs until done or failing, and closes them. Exceptions of
    the ``fatal`` types stop the supervisor for good (the operator must look).
    """

    def __init__(
        self,
        name: str,
        attempt: Callable[[], Awaitable[None]],
        *,
        fatal: tuple[type[BaseException], ...] = (),
        max_backoff_s: float = 10.0,
    ) -> None:
        self.name = name
        self.attempt = attempt
        self.fatal = fatal
        self.max_backoff_s = max_backoff_s
        self.running = False
        self.failed: BaseException | None = None
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    async def run(self) -> None:
        backoff = 0.5
        while not self._stopping:
            try:
                self.running = True
                await self.attempt()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except self.fatal as exc:
                self.failed = exc
                log.critical("%s stopped: %s", self.name, exc)
                return
            except Exception:
                log.warning("%s failed; restarting in %.1fs", self.name, backoff, exc_info=True)
            finally:
                self.running = False
            if self._stopping:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)


class Stoppable(Protocol):
    """A running loop (a consumer, the relay, a dispatcher) told to finish its current step."""

    def stop(self) -> None: ...


@dataclass
class Workers:
    """A process's background work: supervised loops started together and stopped together.

    ``running`` holds the loops live right now by name (each attempt registers its loop and
    removes it when done), so shutdown can tell each to finish and readiness can look at them.
    ``background`` are plain tasks (refreshers, pruners) that are cancelled on shutdown.
    """

    supervisors: Sequence[Supervisor] = ()
    background: Sequence[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = ()
    grace_s: float = 15.0
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    running: dict[str, Stoppable] = field(default_factory=dict)
    _supervised: list[asyncio.Task[None]] = field(default_factory=list)
    _background: list[asyncio.Task[None]] = field(default_factory=list)

    def register(self, name: str, loop: Stoppable | None) -> None:
        """``loop`` runs under ``name`` from now on (None: it has finished)."""
        if loop is None:
            self.running.pop(name, None)
        else:
            self.running[name] = loop

    def start(self) -> None:
        self._supervised = [asyncio.create_task(s.run(), name=s.name) for s in self.supervisors]
        self._background = [asyncio.create_task(run(), name=name) for name, run in self.background]

    async def stop(self) -> None:
        """Tell every loop to finish, wait up to ``grace_s`` for them, then cancel the rest."""
        self.stopping.set()
        for supervisor in self.supervisors:
            supervisor.stop()
        for loop in list(self.running.values()):
            loop.stop()
        for task in self._background:
            task.cancel()
        pending: set[asyncio.Task[None]] = set()
        if self._supervised:
            _, pending = await asyncio.wait(self._supervised, timeout=self.grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, *self._background, return_exceptions=True)

    @property
    def failed(self) -> bool:
        """A supervisor stopped for good (its loop hit a fatal error)."""
        return any(s.failed is not None for s in self.supervisors)

    @asynccontextmanager
    async def started(self) -> AsyncIterator[Workers]:
        """Started for the block's duration, stopped when it ends (a lifespan's body)."""
        self.start()
        try:
            yield self
        finally:
            await self.stop()
