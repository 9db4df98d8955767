"""What a handler is to the loop: it applies a batch on the loop's connection, inside the
batch's transaction, and says which records were poison."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True, slots=True)
class Poison:
    """A record the handler could not use, and why."""

    record: Any
    reason: str


@dataclass(slots=True)
class BatchResult:
    """What a handler reports about one batch (poison goes to the DLQ)."""

    poison: list[Poison] = field(default_factory=list)
    applied: int = 0
    # called once the batch's transaction committed (never if it rolled back): for what a
    # handler may only believe of the database after the commit (rows it wrote, as written)
    committed: Callable[[], None] | None = None


class Conflict(RuntimeError):
    """A concurrent transaction changed what the batch read (or claimed first): the batch
    rolled back and is retried at once, reading again (backoff only if it conflicts again)."""


Handler = Callable[[AsyncConnection, Sequence[Any]], Awaitable[BatchResult]]
