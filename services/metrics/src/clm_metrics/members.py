"""Who a lifecycle record counts in the exact distinct sets, and the profile it takes out of
them (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clm_metrics.buckets import floor_minute, instant


@dataclass(frozen=True, slots=True, order=True)
class DistinctKey:
    """A distinct-count bucket (minute; rolled up to hours and days when written)."""

    bucket_start: datetime
    metric: str
    source: str
    channel: str


def customer_id_of(record: Mapping[str, Any]) -> str | None:
    facts = record.get("customer") or {}
    event = record.get("event") or {}
    key = facts.get("customer_id") or event.get("customer_id") or event.get("anonymous_id")
    return None if key is None else str(key)


def distinct_items(record: Mapping[str, Any]) -> list[tuple[DistinctKey, str]]:
    """Ids for the exact distinct counts, by the event's minute, source and channel:
    ``visitors`` (a site visit) and ``purchasers`` (an order: one item per order, so the writer
    knows who ordered twice in a bucket — the ``repeat_purchasers`` rows). Other records
    (corrections, sweeps, removals) count no one."""
    event = record.get("event")
    if event is None or record.get("kind") == "correction":
        return []
    who = customer_id_of(record)
    if who is None:
        return []
    metric = {"site_visit": "visitors", "purchase": "purchasers"}.get(str(event["type"]))
    if metric is None:
        return []
    at = floor_minute(instant(event["occurred_at"]))
    src, ch = str(event.get("source") or ""), str(event.get("channel") or "")
    return [(DistinctKey(at, metric, src, ch), who)]


@dataclass(frozen=True, slots=True)
class Leaving:
    """A profile leaving the distinct sets: erased (``into`` None: its bits cleared), merged
    into ``into`` (its bits moved to the survivor), or anonymised (``pseudonym``: its bits stay,
    its id is replaced by the pseudonym)."""

    who: str
    into: str | None = None
    pseudonym: str | None = None


def leaving(record: Mapping[str, Any]) -> Leaving | None:
    """The profile an ``erasure`` or ``identity_merge`` record takes out (``customer_merge``
    records need nothing: the merged-away profile has its own ``identity_merge``)."""
    kind, who = record.get("kind"), record.get("customer_id")
    if who is None:
        return None
    if kind == "erasure":
        pseudonym = record.get("pseudonym") if record.get("mode") == "anonymise" else None
        return Leaving(str(who), pseudonym=None if pseudonym is None else str(pseudonym))
    if kind == "identity_merge" and record.get("merged_into"):
        return Leaving(str(who), into=str(record["merged_into"]))
    return None
