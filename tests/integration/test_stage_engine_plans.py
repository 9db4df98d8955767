"""The consumer's lookups stay index look-ups whatever the tables' sizes when their plans were
made: on the lanes' connections (``KEYED_PLANS``) a generic plan made on an empty event log
probes the keys, where Postgres' own choice hashes or scans whole tables."""

from __future__ import annotations

import asyncpg

from clm_stage_engine.app import KEYED_PLANS
from clm_stage_engine.repository import _LOCK, _LOOKUP

ARGS = {
    "lookup": (_LOOKUP, (["shop"] * 3, ["e1", "e2", "e3"], ["h"], ["anon-1"])),
    "lock": (_LOCK, (["c1", "c2"],)),
}


async def _generic_plans(url: str, session: tuple[str, ...]) -> dict[str, str]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        for statement in (*session, "SET plan_cache_mode = force_generic_plan"):
            await conn.execute(statement)
        plans = {}
        for name, (sql, args) in ARGS.items():
            explain = await conn.prepare(f"EXPLAIN (COSTS OFF) {sql}")
            plans[name] = "\n".join(row[0] for row in await explain.fetch(*args))
        return plans
    finally:
        await conn.close()


async def test_the_lanes_generic_plans_probe_keys_on_empty_tables(database_url: str) -> None:
    plans = await _generic_plans(database_url, KEYED_PLANS)
    for name, plan in plans.items():
        for table in ("customer_events", "processed_events", "customers", "erasures"):
            assert f"Seq Scan on {table}" not in plan, f"{name}:\n{plan}"
        assert "Hash Join" not in plan, f"{name}:\n{plan}"
    # what the settings change: the default planner's generic plan for the same statement
    default = await _generic_plans(database_url, ())
    assert "Seq Scan on" in default["lookup"] or "Hash" in default["lookup"], default["lookup"]
