"""Customer segments' KPIs (pure; no I/O): which segment a request names, what a window's
figures are and which segments the Prometheus series carry.

A segment's membership spans come from the stage engine (``segment_spans``): a customer is a
member from ``entered_at`` until ``left_at`` (NULL: still a member). Over a window
``[start, end)``:

- ``segment_size``: the spans with ``entered_at <= end`` and ``left_at`` NULL or after ``end``
  (the members at the window's end);
- ``segment_entries``: the spans entered in the window;
- ``segment_exits``: the spans left in the window.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: The largest segment id (a Postgres ``bigint``).
MAX_ID = 2**63 - 1

_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class SegmentRef:
    """How a request names a segment: its id (all digits) or its name (anything else). A
    name made of digits is looked up as a name when no segment has it as its id."""

    id: int | None
    name: str


def parse_ref(text: str) -> SegmentRef:
    """``text`` as a segment reference; ValueError for an id out of a bigint's range."""
    if not _DIGITS.fullmatch(text):
        return SegmentRef(None, text)
    number = int(text)
    if number < 1 or number > MAX_ID:
        raise ValueError(f"a segment id is between 1 and {MAX_ID}")
    return SegmentRef(number, text)


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """A segment as the metrics service knows it (``segment_names``)."""

    id: int
    name: str
    deleted_at: datetime | None

    def document(self) -> dict[str, Any]:
        deleted = None if self.deleted_at is None else self.deleted_at.isoformat()
        return {"id": self.id, "name": self.name, "deleted_at": deleted}


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """A segment's KPIs over one window."""

    size: int
    entries: int
    exits: int

    def kpis(self) -> dict[str, int]:
        return {
            "segment_size": self.size,
            "segment_entries": self.entries,
            "segment_exits": self.exits,
        }


@dataclass(frozen=True, slots=True)
class SegmentTotals:
    """A non-deleted segment's figures now: its members (open spans) and every span entered
    and left so far."""

    id: int
    name: str
    members: int
    entries: int
    exits: int


@dataclass(frozen=True, slots=True)
class Labelled:
    """The segments the Prometheus series carry, and how many were left out."""

    segments: tuple[SegmentTotals, ...] = ()
    unlabelled: int = 0


def bounded(segments: Sequence[SegmentTotals], live: int, bound: int) -> Labelled:
    """The ``bound`` oldest (lowest id) of the ``live`` non-deleted segments: labels stay put
    while segments come and go past the bound."""
    kept = tuple(sorted(segments, key=lambda s: s.id)[:bound])
    return Labelled(kept, max(live - len(kept), 0))
