"""What is left of one fetched batch while it is applied: bisected, in order, down to the
records that fail alone.

Each part is a run of records applied as one batch, or a record set aside with the failure it
caused alone (it goes to the dead-letter topic). Splitting keeps the order, so a partition's
records are still applied in offset order. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clm_infra.failures import Failure


@dataclass(frozen=True, slots=True)
class SetAside:
    """A record that fails any batch it is in, and how it failed alone."""

    record: Any
    failure: Failure

    @property
    def records(self) -> list[Any]:
        return [self.record]


@dataclass(frozen=True, slots=True)
class Run:
    """Records to apply as one batch."""

    records: list[Any]


Part = Run | SetAside


class Plan:
    """The parts left, first to last; ``split`` once a failure retrying cannot fix was met."""

    def __init__(self, records: list[Any]) -> None:
        self._parts: list[Part] = [Run(records)]
        self.split = False

    def __bool__(self) -> bool:
        return bool(self._parts)

    def head(self) -> Part:
        return self._parts[0]

    def done(self) -> None:
        """The first part is applied (or had nothing left to apply)."""
        self._parts.pop(0)

    def records_left(self) -> list[Any]:
        """Every record of every part left, in order."""
        return [r for part in self._parts for r in part.records]

    def first_split(self) -> bool:
        """A failure retrying cannot fix: is it the batch's first?"""
        first, self.split = not self.split, True
        return first

    def set_aside(self, record: Any, failure: Failure) -> None:
        """The first part is ``record``, which fails alone with ``failure``."""
        self._parts[0] = SetAside(record, failure)

    def bisect(self, records: list[Any]) -> None:
        """The first part is ``records``, applied as two halves from now on."""
        half = len(records) // 2
        self._parts[0:1] = [Run(records[:half]), Run(records[half:])]
