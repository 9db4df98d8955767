"""From lifecycle records to per-minute bucket increments (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True, order=True)
class BucketKey:
    bucket_start: datetime
    metric: str
    source: str
    channel: str
    currency: str


def increments(record: Mapping[str, Any]) -> list[tuple[BucketKey, Decimal]]:
    """The bucket increments one ``clm.lifecycle.v1`` record makes (bucket = event minute).

    Records without an event (time-based moves, identity merges, erasures) only move stage
    counts.
    """
    event = record.get("event")
    if event is None:
        return []
    at = datetime.fromisoformat(event["occurred_at"]).replace(second=0, microsecond=0)
    source = str(event.get("source", ""))
    channel = str(event.get("channel") or "")
    props = event.get("properties") or {}

    def key(metric: str, currency: str = "") -> BucketKey:
        return BucketKey(at, metric, source, channel, currency)

    out = [(key("events"), Decimal(1)), (key(f"events:{event['type']}"), Decimal(1))]
    if event["type"] == "purchase":
        currency = str(props["currency"])
        out.append((key("orders", currency), Decimal(1)))
        out.append((key("revenue", currency), Decimal(str(props["amount"]))))
    elif event["type"] == "refund":
        out.append((key("refunds"), Decimal(1)))
    if record.get("first_purchase"):
        out.append((key("new_customers"), Decimal(1)))
    if record.get("repeat_purchase"):
        out.append((key("repeat_purchases"), Decimal(1)))
    if record.get("reactivation"):
        out.append((key("reactivations"), Decimal(1)))
    return out


def aggregate(pairs: Iterable[tuple[BucketKey, Decimal]]) -> dict[BucketKey, Decimal]:
    out: dict[BucketKey, Decimal] = {}
    for k, v in pairs:
        out[k] = out.get(k, Decimal(0)) + v
    return out


def stage_deltas(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many customers each stage gained or lost (a new customer has no stage before)."""
    out: dict[str, int] = {}
    for r in records:
        before, after = r.get("stage_before"), r.get("stage_after")
        if before == after:
            continue
        if before is not None:
            out[before] = out.get(before, 0) - 1
        if after is not None:  # None: the profile left (merged into another, or erased)
            out[after] = out.get(after, 0) + 1
    return {s: d for s, d in out.items() if d != 0}
