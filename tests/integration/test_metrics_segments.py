"""The segment KPIs through the metrics API and its Prometheus series, on real Postgres.

Definitions go straight into ``segments`` and spans into ``segment_memberships`` (as the stage
engine writes them); the service reads them through the views ``segment_names`` and
``segment_spans``. Each window's ``segment_size`` / ``segment_entries`` / ``segment_exits``
equals a brute-force count over the same spans; the series carry the segments not deleted,
by name, bounded by ``CLM_SEGMENTS_MAX_ACTIVE``, and follow a deletion and a rename.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain.kpis import floor_minute
from clm_infra.segment_schema import segment_memberships, segments
from clm_infra.settings import CommonSettings, SegmentSettings
from clm_metrics.app import create_app
from clm_metrics.settings import MetricsSettings
from tests.integration.apps import app_client
from tests.integration.conftest import eventually
from tests.keys import READ

CONDITION = {"fact": "purchases", "op": "ge", "value": 1}
#: Live segments in id order ("777" is a name made of digits); "gone" is deleted.
NAMES = ("vip", "churners", "new", "777", "extra")
BOUND = 3


@dataclass(frozen=True)
class Span:
    segment_id: int
    entered_at: datetime
    left_at: datetime | None


@pytest.fixture
async def metrics(common: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    settings = MetricsSettings(
        metrics_segment_refresh_s=0.05, segments=SegmentSettings(max_active=BOUND)
    )
    async with app_client(create_app(settings), "http://metrics") as client:
        yield client


async def define(db: AsyncEngine, name: str, deleted_at: datetime | None = None) -> int:
    row = {"name": name, "condition": CONDITION, "deleted_at": deleted_at}
    async with db.begin() as conn:
        new = await conn.execute(insert(segments).values(**row).returning(segments.c.id))
        return int(new.scalar_one())


def spans_of(
    segment_id: int, now: datetime, rng: random.Random, edges: list[datetime]
) -> list[Span]:
    """Random spans over the last 40 days (some still open), and some on window edges."""
    out = []
    for _ in range(rng.randint(40, 90)):
        entered = now - timedelta(seconds=rng.uniform(0, 40 * 86400))
        left = None if rng.random() < 0.4 else entered + (now - entered) * rng.random()
        out.append(Span(segment_id, entered, left))
    for edge in edges:
        out.append(Span(segment_id, edge, None))
        out.append(Span(segment_id, edge - timedelta(days=1), edge))
        out.append(Span(segment_id, edge - timedelta(microseconds=1), edge + timedelta(hours=1)))
    return out


async def store(db: AsyncEngine, spans: list[Span]) -> None:
    rows = [
        {
            "segment_id": s.segment_id,
            # an erased customer's closed spans keep no id
            "customer_id": None if s.left_at is not None and n % 7 == 0 else f"c-{n}",
            "version": 1,
            "entered_at": s.entered_at,
            "left_at": s.left_at,
            "entered_by": "backfill",
            "left_by": None if s.left_at is None else "sweep",
        }
        for n, s in enumerate(spans)
    ]
    async with db.begin() as conn:
        await conn.execute(insert(segment_memberships), rows)


def brute_force(
    spans: list[Span], segment_id: int, start: datetime, end: datetime
) -> dict[str, int]:
    mine = [s for s in spans if s.segment_id == segment_id]
    return {
        "segment_size": sum(
            1 for s in mine if s.entered_at <= end and (s.left_at is None or s.left_at > end)
        ),
        "segment_entries": sum(1 for s in mine if start <= s.entered_at < end),
        "segment_exits": sum(1 for s in mine if s.left_at is not None and start <= s.left_at < end),
    }


async def kpis(client: httpx.AsyncClient, status: int = 200, /, **params: str) -> dict[str, Any]:
    answer = await client.get("/v1/kpis", params=params, headers=READ)
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    return body


@pytest.fixture
async def world(db: AsyncEngine) -> tuple[dict[str, int], list[Span], datetime]:
    now = datetime.now(UTC)
    ids = {name: await define(db, name) for name in NAMES}
    ids["gone"] = await define(db, "gone", deleted_at=now - timedelta(days=1))
    rng = random.Random(3232)
    edges = [floor_minute(now - timedelta(days=5)), floor_minute(now - timedelta(days=2))]
    spans = [s for i in ids.values() for s in spans_of(i, now - timedelta(minutes=1), rng, edges)]
    await store(db, spans)
    return ids, spans, now


async def test_segment_kpis_equal_a_brute_force_count_per_window(
    metrics: httpx.AsyncClient, world: tuple[dict[str, int], list[Span], datetime]
) -> None:
    ids, spans, now = world
    ranges: list[dict[str, str]] = [{"window": w} for w in ("1h", "24h", "7d", "30d", "90d")]
    ranges.append(
        {
            "from": floor_minute(now - timedelta(days=5)).isoformat(),
            "to": floor_minute(now - timedelta(days=2)).isoformat(),
        }
    )
    for name, segment_id in ids.items():
        for params in ranges:
            got = await kpis(metrics, segment=str(segment_id), **params)
            start, end = datetime.fromisoformat(got["from"]), datetime.fromisoformat(got["to"])
            want = brute_force(spans, segment_id, start, end)
            assert {k: got[k] for k in want} == want, (name, params)
            assert got["segment"]["id"] == segment_id
            assert got["segment"]["name"] == name
    seven_days = await kpis(metrics, segment=str(ids["vip"]), window="7d")
    assert seven_days["segment_entries"] > 0
    assert seven_days["segment_exits"] > 0
    assert seven_days["window"] == "7d"
    # by name: the same answer; a name made of digits that is no id is a name
    assert await kpis(metrics, segment="vip", window="7d") == seven_days
    digits = await kpis(metrics, segment="777", window="7d")
    assert digits["segment"]["id"] == ids["777"] != 777
    # a deleted segment is served by its id, with when it was deleted; its name is free
    gone = await kpis(metrics, segment=str(ids["gone"]), window="30d")
    assert gone["segment"]["deleted_at"] is not None
    assert (await kpis(metrics, segment=str(ids["vip"])))["segment"]["deleted_at"] is None
    await kpis(metrics, 404, segment="gone")
    # without a segment: the lifecycle KPIs as before, nothing about segments
    plain = await kpis(metrics, window="7d")
    assert "events" in plain
    assert "segment" not in plain
    assert "segment_size" not in plain


async def test_unknown_and_bad_segments_are_problems(
    metrics: httpx.AsyncClient, world: tuple[dict[str, int], list[Span], datetime]
) -> None:
    for unknown in ("424242", "nobody"):
        problem = await kpis(metrics, 404, segment=unknown)
        assert problem["title"] == "Unknown segment"
    for bad in ("", "9" * 20, "0", "a\x01b", "x" * 201):
        problem = await kpis(metrics, 422, segment=bad)
        assert [e["field"] for e in problem["errors"]] == ["segment"], (bad, problem)
    for other in ({"source": "web"}, {"channel": "email"}):
        problem = await kpis(metrics, 422, segment="vip", **other)
        assert [e["field"] for e in problem["errors"]] == ["segment"]


def exposition(text: str) -> dict[str, Any]:
    """name → (type, {segment label (or None): value}) of the segment families."""
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith(("clm_segment_", "clm_segments_")):
            values = {s.labels.get("segment"): s.value for s in family.samples}
            out[family.name] = (family.type, values)
    return out


async def scraped(client: httpx.AsyncClient, want: dict[str, int]) -> dict[str, Any] | None:
    """The segment families once the labelled segments and their members are ``want``."""
    families = exposition((await client.get("/metrics")).text)
    members = families.get("clm_segment_members", (None, {}))[1]
    return families if members == want else None


def totals(spans: list[Span], segment_id: int) -> tuple[int, int, int]:
    mine = [s for s in spans if s.segment_id == segment_id]
    return (
        sum(1 for s in mine if s.left_at is None),
        len(mine),
        sum(1 for s in mine if s.left_at is not None),
    )


async def test_prometheus_series_are_bounded_and_follow_deletes_and_renames(
    metrics: httpx.AsyncClient,
    db: AsyncEngine,
    world: tuple[dict[str, int], list[Span], datetime],
) -> None:
    ids, spans, _ = world
    first = {"vip", "churners", "new"}  # the BOUND oldest of the five live segments
    families = await eventually(
        lambda: scraped(metrics, {name: totals(spans, ids[name])[0] for name in first})
    )
    assert families["clm_segment_members"][0] == "gauge"
    assert families["clm_segment_entries"][0] == "counter"  # exposed as ..._total
    assert families["clm_segment_exits"][0] == "counter"
    for name in first:
        members, entries, exits = totals(spans, ids[name])
        assert families["clm_segment_members"][1][name] == members
        assert families["clm_segment_entries"][1][name] == entries
        assert families["clm_segment_exits"][1][name] == exits
    assert families["clm_segments_unlabelled"][1] == {None: 2}
    text = (await metrics.get("/metrics")).text
    assert "# TYPE clm_segment_entries_total counter" in text
    assert (
        f'clm_segment_entries_total{{segment="vip"}} {float(totals(spans, ids["vip"])[1])}' in text
    )

    # deleted as the stage engine deletes one: deleted_at set, the open spans closed
    async with db.begin() as conn:
        at = datetime.now(UTC)
        await conn.execute(
            update(segments).where(segments.c.id == ids["churners"]).values(deleted_at=at)
        )
        m = segment_memberships.c
        await conn.execute(
            update(segment_memberships)
            .where(m.segment_id == ids["churners"], m.left_at.is_(None))
            .values(left_at=at, left_by="deleted")
        )
        await conn.execute(update(segments).where(segments.c.id == ids["vip"]).values(name="vips"))
    after = {"vips": ids["vip"], "new": ids["new"], "777": ids["777"]}
    families = await eventually(
        lambda: scraped(metrics, {k: totals(spans, i)[0] for k, i in after.items()})
    )
    assert families["clm_segments_unlabelled"][1] == {None: 1}
    for family in ("clm_segment_members", "clm_segment_entries", "clm_segment_exits"):
        assert set(families[family][1]) == set(after)
    assert families["clm_segment_members"][1]["vips"] == totals(spans, ids["vip"])[0]
    # the deleted segment's figures stay in its KPIs: its members left at the deletion
    gone = await kpis(metrics, segment=str(ids["churners"]), window="1h")
    assert gone["segment_size"] == 0
    assert gone["segment_exits"] >= totals(spans, ids["churners"])[0]
