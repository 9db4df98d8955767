"""Supervising a Kafka worker: (re)build its clients until the broker answers, run, restart.

A service's HTTP side stays up while Kafka is away; its readiness says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

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
