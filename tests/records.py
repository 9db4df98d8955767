"""Kafka records as the services' handlers read them, for feeding a handler directly."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class Record:
    """What a handler reads of a Kafka record."""

    key: bytes | None
    value: bytes
    topic: str = "t"
    partition: int = 0
    offset: int = 0


def unkeyed(docs: Iterable[Any]) -> list[Record]:
    """``docs`` (anything orjson serialises) as records without keys: the metrics handler
    reads only the value."""
    return [Record(None, orjson.dumps(doc)) for doc in docs]
