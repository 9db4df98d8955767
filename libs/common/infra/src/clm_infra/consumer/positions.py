"""Where the loop stands on each partition it owns: the next offset it expects (the one
stored in Postgres), when it last made progress there, and the log's end as fetched records
show it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from clm_infra.offsets import OffsetAdvance

Key = tuple[str, int]  # (topic, partition)


def key_of(record: Any) -> Key:
    return (record.topic, record.partition)


class Positions:
    """The loop's view of its partitions; a partition not in ``expected`` is not (yet) its."""

    def __init__(self) -> None:
        # the next offset to apply, as stored in Postgres (None: nothing stored yet)
        self.expected: dict[Key, int | None] = {}
        # when the loop last made progress on a partition (monotonic)
        self.progress_at: dict[Key, float] = {}
        # the end of the log as far as fetched records show (the lag while a batch is stuck)
        self.seen_end: dict[Key, int] = {}

    def assigned(self, stored: Mapping[Key, int | None], keys: Iterable[Key], now: float) -> None:
        """``keys`` now start at their stored offsets."""
        for key in keys:
            self.expected[key] = stored.get(key)
            self.progress_at[key] = now

    def forget(self, key: Key) -> None:
        self.expected.pop(key, None)
        self.progress_at.pop(key, None)
        self.seen_end.pop(key, None)

    def saw(self, records: Iterable[Any]) -> None:
        """Fetched ``records``: the log reaches at least past each."""
        for r in records:
            key = key_of(r)
            self.seen_end[key] = max(self.seen_end.get(key, 0), r.offset + 1)

    def fresh(self, records: Iterable[Any]) -> list[Any]:
        """The records not applied yet (at or past their partition's expected offset)."""
        return [
            r
            for r in records
            if key_of(r) in self.expected and r.offset >= (self.expected[key_of(r)] or 0)
        ]

    def advances_for(self, records: Iterable[Any]) -> dict[Key, OffsetAdvance]:
        """One compare-and-set per partition: from its expected offset to past its last
        record (a partition's records come in offset order)."""
        last: dict[Key, int] = {}
        for r in records:
            last[key_of(r)] = r.offset
        return {
            key: OffsetAdvance(key[0], key[1], self.expected[key], offset + 1)
            for key, offset in last.items()
        }

    def advanced(self, advances: Iterable[OffsetAdvance], now: float) -> None:
        """The ``advances`` committed: progress on their partitions."""
        for a in advances:
            key = (a.topic, a.partition)
            self.expected[key] = a.next_offset
            self.progress_at[key] = now

    def lag(self, key: Key, highwater: int) -> int:
        return max(0, highwater - (self.expected.get(key) or 0))
