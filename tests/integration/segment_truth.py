"""Segments for the integration tests, independent of the engine's compiled predicates: a
definition written straight into the tables (as the API does: the catalog's lock, the row and
its version, the catalog bumped), a brute-force interpreter of a condition's JSON, and the
memberships the tables and the ``clm.segments.v1`` records say.

The interpreter reads the condition document itself (never ``parse_condition`` nor
``compile_condition``): it is the spec written out plainly, so the engine is held to it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator, FormatChecker  # type: ignore[import-untyped]
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clm_domain.lifecycle import CustomerState
from clm_domain.stages import parse_stage
from clm_infra.schema import customers
from clm_infra.segment_schema import CATALOG_LOCK
from clm_stage_engine.outbox import unpack_records
from clm_stage_engine.repository.rows import state_from_row

ROOT = Path(__file__).resolve().parents[2]
DAY = timedelta(days=1)
Pair = tuple[int, str]  # (segment id, customer id)


# --- definitions ------------------------------------------------------------------------------


async def define(
    conn: AsyncConnection,
    name: str,
    condition: dict[str, Any],
    *,
    backfill: bool = False,
    announce: bool = False,
) -> int:
    """A new segment, in the caller's transaction (commit it for writers to see it): the
    catalog's lock exclusive, the definition and its version 1, the catalog bumped.
    ``backfill``: every existing customer is to be evaluated (the backfill worker's job)."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CATALOG_LOCK})
    sid = (
        await conn.execute(
            text(
                "INSERT INTO segments (name, condition, version, announce_backfill,"
                " backfill_version) VALUES (:n, CAST(:c AS jsonb), 1, :a, :b) RETURNING id"
            ),
            {
                "n": name,
                "c": orjson.dumps(condition).decode(),
                "a": announce,
                "b": 1 if backfill else None,
            },
        )
    ).scalar_one()
    await conn.execute(
        text(
            "INSERT INTO segment_versions (segment_id, version, name, description, condition)"
            " VALUES (:i, 1, :n, '', CAST(:c AS jsonb))"
        ),
        {"i": sid, "n": name, "c": orjson.dumps(condition).decode()},
    )
    await conn.execute(text("UPDATE segment_catalog SET version = version + 1 WHERE id = 1"))
    return int(sid)


async def define_now(db: AsyncEngine, name: str, condition: dict[str, Any], **how: bool) -> int:
    async with db.begin() as conn:
        return await define(conn, name, condition, **how)


# --- the brute-force interpreter ----------------------------------------------------------


def fact(state: CustomerState, name: str) -> Any:
    """A fact's value (None: null), from the stored state as the spec defines it."""
    if name == "tickets_open":
        return max(0, state.tickets_opened - state.tickets_solved)
    if name == "net_revenue":
        return state.revenue - state.refunded
    if name == "average_order_value":
        return state.revenue / state.purchases if state.purchases else None
    if name == "review_average":
        return state.review_sum / state.reviews if state.reviews else None
    if name in ("p_alive", "expected_purchases_90d", "predicted_clv"):
        return None  # no model fitted in these tests
    return getattr(state, name)


def _scalar(name: str, raw: Any) -> Any:
    if name == "stage":
        return parse_stage(raw)
    if name in ("revenue", "refunded", "net_revenue", "repeat_spend", "average_order_value"):
        return Decimal(str(raw))
    if name.endswith("_at") and isinstance(raw, str):
        return datetime.fromisoformat(raw)
    return raw


def _compare(op: str, x: Any, value: Any, name: str) -> bool:
    if op == "exists":
        return (x is not None) == (True if value is None else value)
    if x is None:
        return False
    if op == "in":
        return any(x == _scalar(name, v) for v in value)
    if op == "between":
        return bool(_scalar(name, value[0]) <= x <= _scalar(name, value[1]))
    v = _scalar(name, value)
    return bool(
        {"eq": x == v, "ne": x != v, "lt": x < v, "le": x <= v, "gt": x > v, "ge": x >= v}[op]
    )


def holds(doc: Mapping[str, Any], state: CustomerState, now: datetime) -> bool:
    """Whether ``state`` matches the condition ``doc`` (its JSON) at ``now``."""
    if "all" in doc:
        return all(holds(d, state, now) for d in doc["all"])
    if "any" in doc:
        return any(holds(d, state, now) for d in doc["any"])
    if "not" in doc:
        return not holds(doc["not"], state, now)
    if "days_since" in doc:
        at = getattr(state, doc["days_since"])
        days = None if at is None else math.floor((now - at) / DAY)
        return _compare(doc["op"], days, doc.get("value"), "days")
    return _compare(doc["op"], fact(state, doc["fact"]), doc.get("value"), doc["fact"])


# --- what the tables and the records say ----------------------------------------------------


async def definitions(conn: AsyncConnection) -> dict[int, dict[str, Any]]:
    rows = await conn.execute(
        text("SELECT id, condition::text FROM segments WHERE deleted_at IS NULL ORDER BY id")
    )
    return {int(i): orjson.loads(c) for i, c in rows.all()}


async def brute_force(conn: AsyncConnection, now: datetime) -> set[Pair]:
    """Every (segment, customer) the stored customers match at ``now``, by the interpreter."""
    defs = await definitions(conn)
    states = [state_from_row(r) for r in (await conn.execute(select(customers))).all()]
    return {(sid, s.customer_id) for s in states for sid, doc in defs.items() if holds(doc, s, now)}


async def open_spans(conn: AsyncConnection) -> set[Pair]:
    rows = await conn.execute(
        text("SELECT segment_id, customer_id FROM segment_memberships WHERE left_at IS NULL")
    )
    return {(int(s), str(c)) for s, c in rows.all()}


async def span_problems(conn: AsyncConnection) -> list[str]:
    """Spans of one (segment, customer) that overlap, or that end before they start."""
    rows = await conn.execute(
        text(
            "SELECT segment_id, customer_id, entered_at, left_at FROM segment_memberships"
            " WHERE customer_id IS NOT NULL ORDER BY segment_id, customer_id, entered_at,"
            " left_at NULLS LAST"
        )
    )
    out = []
    last: dict[Pair, datetime | None] = {}
    for sid, cid, entered, left in rows.all():
        pair = (int(sid), str(cid))
        if left is not None and left < entered:
            out.append(f"span {pair} ends ({left}) before it starts ({entered})")
        if pair in last:
            before = last[pair]
            if before is None or before > entered:
                out.append(f"spans of {pair} overlap: one until {before}, the next from {entered}")
        last[pair] = left
    return out


async def segment_records(conn: AsyncConnection, topic: str) -> list[dict[str, Any]]:
    """The records queued for ``topic`` in the outbox, in the relay's order."""
    rows = await conn.execute(
        text("SELECT records, payload FROM outbox_batches WHERE topic = :t ORDER BY id"),
        {"t": topic},
    )
    return [
        orjson.loads(value)
        for count, payload in rows.all()
        for _, value in unpack_records(bytes(payload), int(count))
    ]


def replayed(records: Iterable[Mapping[str, Any]]) -> set[Pair]:
    """The membership ``records`` give, replayed from empty (each record id once)."""
    seen: set[str] = set()
    members: set[Pair] = set()
    for r in records:
        if r["record_id"] in seen:
            continue
        seen.add(r["record_id"])
        pair = (int(r["segment_id"]), str(r["customer_id"]))
        if r["kind"] == "enter":
            members.add(pair)
        else:
            members.discard(pair)
    return members


def _aware(value: object) -> bool:
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


_FORMATS = FormatChecker()
_FORMATS.checks("date-time", raises=ValueError)(_aware)


def record_validator() -> Draft202012Validator:
    doc = orjson.loads((ROOT / "deploy/schemas/clm.segments.v1.schema.json").read_bytes())
    Draft202012Validator.check_schema(doc)
    return Draft202012Validator(doc, format_checker=_FORMATS)


def utc(at: datetime) -> datetime:
    return at.astimezone(UTC)
