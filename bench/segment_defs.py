"""What the segments benchmark defines and fills: realistic segment conditions, their
definition in SQL the way the API writes one, and customers and memberships filled with
``generate_series`` (fast enough for a million rows on the bench's 2 cores)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import orjson

from clm_domain.segments import dump_condition, parse_condition
from clm_infra.segment_schema import CATALOG_LOCK

Condition = dict[str, Any]


def _days(fact: str, op: str, value: int) -> Condition:
    return {"days_since": fact, "op": op, "value": value}


def _fact(fact: str, op: str, value: object) -> Condition:
    return {"fact": fact, "op": op, "value": value}


#: Ten shapes of segment a marketer defines (stage, counts, money, days since, any/all/not);
#: ``k`` varies the thresholds when more than ten are asked for.
TEMPLATES: list[tuple[str, Callable[[int], Condition]]] = [
    (
        "repeat-buyers",
        lambda k: {
            "all": [
                _fact("stage", "in", ["retention", "loyalty"]),
                _fact("purchase_days", "ge", 2 + k),
            ]
        },
    ),
    (
        "big-spenders",
        lambda k: {
            "all": [_fact("purchases", "ge", 2 + k % 3), _fact("revenue", "gt", f"{50 + 10 * k}")]
        },
    ),
    (
        "lapsing",
        lambda k: {"any": [_days("last_seen_at", "gt", 14 + k), _fact("stage", "eq", "at_risk")]},
    ),
    (
        "still-with-us",
        lambda k: {
            "not": {
                "any": [
                    _fact("stage", "in", ["churned", "at_risk"]),
                    _days("last_seen_at", "gt", 60 + k),
                ]
            }
        },
    ),
    (
        "new-by-email",
        lambda k: {
            "all": [_fact("first_channel", "eq", "email"), _days("first_seen_at", "le", 90 + k)]
        },
    ),
    ("mid-basket", lambda k: _fact("average_order_value", "between", [f"{20 + k}", f"{100 + k}"])),
    (
        "signed-up-no-order",
        lambda k: {
            "all": [
                _fact("stage", "eq", "acquisition"),
                _days("acquired_at", "ge", 7 + k),
                _fact("purchases", "eq", 0),
            ]
        },
    ),
    (
        "unhappy",
        lambda k: {
            "any": [
                _fact("tickets_open", "ge", 1 + k // 5),
                _fact("refunds", "gt", 0),
                _fact("last_nps", "le", 6 + k % 5),
            ]
        },
    ),
    (
        "foreign-value",
        lambda k: {
            "all": [
                _fact("net_revenue", "ge", f"{80 + k}"),
                {"not": _fact("purchase_currency", "eq", "EUR")},
            ]
        },
    ),
    (
        "recent-active-buyers",
        lambda k: {
            "all": [_fact("events", "ge", 3 + k % 4), _days("last_purchase_at", "lt", 60 + k)]
        },
    ),
]


def segment_conditions(n: int) -> list[tuple[str, Condition]]:
    """``n`` named segment conditions, in their canonical form: the ten shapes in turn, the
    thresholds moved on each round, so no two are the same."""
    out = []
    for i in range(n):
        shape, template = TEMPLATES[i % len(TEMPLATES)]
        condition = dump_condition(parse_condition(template(i // len(TEMPLATES))))
        out.append((f"bench-{i:03d}-{shape}", condition))
    return out


def leaf_kinds(condition: Condition) -> set[str]:
    """The kinds of node a condition uses: ``all``, ``any``, ``not``, ``days_since`` and
    each fact's name (for a check that the set is a realistic mix)."""
    found: set[str] = set()
    stack: list[Any] = [condition]
    while stack:
        node = stack.pop()
        for head in ("all", "any"):
            if head in node:
                found.add(head)
                stack.extend(node[head])
        if "not" in node:
            found.add("not")
            stack.append(node["not"])
        if "days_since" in node:
            found.add("days_since")
        if "fact" in node:
            found.add(node["fact"])
    return found


async def define_segments(
    conn: asyncpg.Connection,
    conditions: Sequence[tuple[str, Condition]],
    *,
    backfill: bool = False,
) -> list[int]:
    """Define each segment as the API does, one transaction each: the catalog's advisory
    lock, the ``segments`` and ``segment_versions`` rows, the catalog bumped. Without
    ``backfill`` none is left pending (only the live path then works on them)."""
    ids = []
    for name, condition in conditions:
        doc = orjson.dumps(condition).decode()
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", CATALOG_LOCK)
            sid = await conn.fetchval(
                "INSERT INTO segments (name, description, condition, version, backfill_version)"
                " VALUES ($1, '', $2::jsonb, 1, $3) RETURNING id",
                name,
                doc,
                1 if backfill else None,
            )
            await conn.execute(
                "INSERT INTO segment_versions (segment_id, version, name, description, condition)"
                " VALUES ($1, 1, $2, '', $3::jsonb)",
                sid,
                name,
                doc,
            )
            await conn.execute("UPDATE segment_catalog SET version = version + 1 WHERE id = 1")
        ids.append(int(sid))
    return ids


#: ``fill-<first>`` … ``fill-<last>``: customers spread over every stage, channel, count and
#: recency the conditions test (a deterministic function of the row number).
FILL_VARIED_SQL = """
INSERT INTO customers (customer_id, stage, stage_entered_at, first_seen_at, last_seen_at,
    first_source, first_channel, acquired_at, converted_at, last_purchase_at, purchases,
    revenue, refunds, refunded, tickets_opened, tickets_solved, last_nps, events,
    purchase_days, repeat_spend, purchase_currency)
SELECT 'fill-' || g,
    (ARRAY['reach','acquisition','conversion','retention','loyalty','at_risk','churned'])[1 + g % 7],
    now() - (g % 40) * interval '1 day',
    now() - (30 + g % 200) * interval '1 day',
    now() - (g % 45) * interval '1 day',
    'bench',
    (ARRAY['email','search','social', NULL])[1 + g % 4],
    CASE WHEN g % 7 >= 1 THEN now() - (20 + g % 150) * interval '1 day' END,
    CASE WHEN g % 7 >= 2 THEN now() - (10 + g % 120) * interval '1 day' END,
    CASE WHEN g % 7 >= 2 THEN now() - (g % 90) * interval '1 day' END,
    CASE WHEN g % 7 >= 2 THEN 1 + g % 5 ELSE 0 END,
    CASE WHEN g % 7 >= 2 THEN (1 + g % 5) * (10 + g % 60) ELSE 0 END,
    CASE WHEN g % 23 = 0 AND g % 7 >= 2 THEN 1 ELSE 0 END,
    0,
    g % 3, CASE WHEN g % 3 = 2 THEN 1 ELSE g % 3 END,
    CASE WHEN g % 5 = 0 THEN g % 11 END,
    3 + g % 20,
    CASE WHEN g % 7 >= 2 THEN 1 + g % 5 ELSE 0 END,
    CASE WHEN g % 7 >= 2 THEN (g % 5) * (10 + g % 60) ELSE 0 END,
    CASE WHEN g % 7 >= 2 THEN (ARRAY['EUR','USD','GBP'])[1 + g % 3] END
FROM generate_series($1::int, $2::int) AS g
"""

#: ``segment_id``'s open spans: every ``every``-th customer of ``fill-1`` … ``fill-<n>``.
FILL_MEMBERS_SQL = """
INSERT INTO segment_memberships (segment_id, customer_id, version, entered_at, entered_by)
SELECT $1, 'fill-' || g, 1, now() - (g % 30) * interval '1 day', 'backfill'
FROM generate_series(1, $2::int) AS g WHERE g % $3::int = 0
"""

#: Closed spans of ``segment_id`` (its history): customers that entered and left.
FILL_CLOSED_SQL = """
INSERT INTO segment_memberships (segment_id, customer_id, version, entered_at, left_at,
    entered_by, left_by)
SELECT $1, 'fill-' || g, 1, now() - interval '40 days', now() - (g % 30) * interval '1 day',
    'backfill', 'sweep'
FROM generate_series(1, $2::int) AS g WHERE g % $3::int = 1
"""


def next_cursor(body: bytes) -> str | None:
    """The ``next`` cursor of a members page (None on the last page)."""
    found = orjson.loads(body).get("next")
    return found if isinstance(found, str) else None


def phase_seconds(exposition: str) -> dict[str, float]:
    """``clm_stage_engine_phase_seconds_total`` by phase, from a Prometheus text page."""
    pattern = r'^clm_stage_engine_phase_seconds_total\{phase="([^"]+)"\} ([0-9.eE+-]+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, exposition, re.M)}
