"""Segments as the API shows them: a definition with its backfill's progress (and, where
asked, its size and versions), and a history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from clm_domain.segments import ConditionError, dump_condition, parse_condition

_SHOWN = ("id", "name", "description", "condition", "version", "announce_backfill")


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def backfill_doc(row: dict[str, Any]) -> dict[str, Any] | None:
    """The backfill's progress: ``pending`` until the worker starts it, ``running``, then
    ``done`` (null: none, the segment was deleted)."""
    version = row["backfill_version"]
    started, finished = row["backfill_started_at"], row["backfill_finished_at"]
    if version is None and finished is None:
        return None
    status = "done" if finished is not None else "running" if started is not None else "pending"
    return {
        "version": row["version"] if version is None else version,
        "status": status,
        "done": row["backfill_done"],
        "total": row["backfill_total"],
        "started_at": _iso(started),
        "finished_at": _iso(finished),
    }


def shown_condition(stored: Any) -> Any:
    """A stored condition in its canonical form (``jsonb`` keeps no key order): ``fact``,
    ``op``, ``value`` as written; as stored should it no longer parse."""
    try:
        return dump_condition(parse_condition(stored))
    except ConditionError:
        return stored


def version_doc(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": row["version"],
        "name": row["name"],
        "description": row["description"],
        "condition": shown_condition(row["condition"]),
        "created_at": row["created_at"].isoformat(),
    }


def segment_doc(
    row: dict[str, Any],
    *,
    size: int | None = None,
    versions: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``segments`` row as the API shows it; ``size`` (its members now) and ``versions``
    (oldest first) where given."""
    doc: dict[str, Any] = {k: row[k] for k in _SHOWN}
    doc["condition"] = shown_condition(row["condition"])
    doc["created_at"] = row["created_at"].isoformat()
    doc["updated_at"] = row["updated_at"].isoformat()
    if size is not None:
        doc["size"] = size
    doc["backfill"] = backfill_doc(row)
    if versions is not None:
        doc["versions"] = [version_doc(v) for v in versions]
    return doc


def history_doc(
    segment_id: int, start: datetime, end: datetime, bucket: str, found: dict[str, Any]
) -> dict[str, Any]:
    return {
        "segment_id": segment_id,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "bucket": bucket,
        "size_at_from": found["size_at_from"],
        "size_at_to": found["size_at_to"],
        "entries": found["entries"],
        "exits": found["exits"],
        "buckets": [
            {
                "start": b["start"].isoformat(),
                "end": b["end"].isoformat(),
                "entries": b["entries"],
                "exits": b["exits"],
                "size": b["size"],
            }
            for b in found["buckets"]
        ],
    }
