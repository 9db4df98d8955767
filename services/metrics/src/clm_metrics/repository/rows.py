"""The keys the metrics tables are written under (pure): rollups of a minute's increments,
the distinct rows a customer number goes to, and which metrics the level reads cover."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from clm_metrics.buckets import BucketKey
from clm_metrics.members import DistinctKey
from clm_metrics.windows import EPOCH, Grain, floor_to

ROLLUP_GRAINS: tuple[Grain, ...] = ("hour", "day")
#: The source/channel of the distinct sets merged over every source or channel (a control
#: character no event's source or channel can contain), so a query reads one row a bucket.
ANY = "\x1fany"
#: ``(grain, start, metric, source, channel)`` of a ``kpi_distinct`` row.
DistinctRow = tuple[str, datetime, str, str, str]


def rollup(increments: Mapping[BucketKey, Decimal]) -> dict[tuple[str, BucketKey], Decimal]:
    """The minute increments summed per hour, per day and all time."""
    out: dict[tuple[str, BucketKey], Decimal] = {}
    for k, v in increments.items():
        for grain in (*ROLLUP_GRAINS, "all"):
            start = EPOCH if grain == "all" else floor_to(k.bucket_start, grain)  # type: ignore[arg-type]
            key = (grain, BucketKey(start, k.metric, k.source, k.channel, k.currency))
            out[key] = out.get(key, Decimal(0)) + v
    return out


def distinct_rows(members: Iterable[tuple[DistinctKey, int]]) -> dict[DistinctRow, Counter[int]]:
    """Each distinct row's new members (``(grain, start, metric, source, channel)``), counted
    (a purchaser's orders): a minute bucket's members go to its minute, hour and day, each also
    merged over every source, every channel and both."""
    per_row: dict[DistinctRow, Counter[int]] = {}
    for k, number in members:
        for grain in ("minute", *ROLLUP_GRAINS):
            start = floor_to(k.bucket_start, grain)
            for source, channel in (
                (k.source, k.channel),
                (k.source, ANY),
                (ANY, k.channel),
                (ANY, ANY),
            ):
                row = (grain, start, k.metric, source, channel)
                per_row.setdefault(row, Counter())[number] += 1
    return per_row


def repeat_row(row: DistinctRow) -> DistinctRow:
    """The ``repeat_purchasers`` row of a ``purchasers`` row's bucket."""
    return (row[0], row[1], "repeat_purchasers", row[3], row[4])


def row_columns(rows: Sequence[DistinctRow]) -> dict[str, list[Any]]:
    """Distinct rows as the array parameters ``g, b, m, s, ch``."""
    return {name: [r[i] for r in rows] for i, name in enumerate(("g", "b", "m", "s", "ch"))}


def bucket_columns(items: Sequence[tuple[BucketKey, Decimal]]) -> dict[str, list[Any]]:
    """Bucket increments as the array parameters ``b, m, s, ch, cu, v``."""
    return {
        "b": [k.bucket_start for k, _ in items],
        "m": [k.metric for k, _ in items],
        "s": [k.source for k, _ in items],
        "ch": [k.channel for k, _ in items],
        "cu": [k.currency for k, _ in items],
        "v": [v for _, v in items],
    }
