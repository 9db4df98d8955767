"""The lifecycle's P(alive) rule on real Kafka and Postgres: with ``at_risk.p_alive_below`` set
and a fitted model row, the sweeper (on a test clock) moves a customer whose P(alive) fell
below the threshold on the day it did, with the score and the model version in the reason
(history API, lifecycle record), and leaves one above it; the batch path makes the same move
before applying a later event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain.p_alive import lapse_reason, p_alive
from clm_domain.rules import LifecycleRules, RulesError
from clm_infra.settings import CommonSettings
from clm_stage_engine.app import create_app
from clm_stage_engine.model_cache import ModelCache
from clm_stage_engine.repository.models import store_fit
from clm_stage_engine.settings import StageEngineSettings
from clm_stage_engine.sweeper import sweep_once
from tests.factories import event_doc
from tests.integration.apps import app_client, read_customer
from tests.integration.conftest import read_topic, send_events, until_events
from tests.keys import READ

# recent enough that nothing is inactive by the real clock (the app's own sweeper runs too)
DAY0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=20)
ON = LifecycleRules.model_validate({"at_risk": {"inactive_days": 60, "p_alive_below": 0.3}})
CDNOW = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426, "log_likelihood": -9582.4}
CROSSING_DAY = 53  # of the frequent buyer below, under CDNOW's parameters (unit test)


def at(days: float) -> str:
    return (DAY0 + timedelta(days=days, hours=10)).isoformat()


def purchases(cid: str, days: list[int]) -> list[dict[str, Any]]:
    return [
        event_doc(
            "purchase",
            customer_id=cid,
            event_id=f"{cid}-{d}",
            order_id=f"{cid}-{d}",
            occurred_at=at(d),
        )
        for d in days
    ]


async def fitted_model(db: AsyncEngine) -> int:
    async with db.begin() as conn:
        row = await store_fit(
            conn,
            {
                "outcome": "fitted",
                "trigger": "manual",
                "as_of": DAY0,
                "customers": 2357,
                "repeat_customers": 1000,
                "log_likelihood": CDNOW["log_likelihood"],
                "bgnbd": CDNOW,
            },
        )
    return int(row["id"])


async def history(client: httpx.AsyncClient, cid: str) -> list[tuple[str, str, str]]:
    doc = (await client.get(f"/v1/customers/{cid}/history", headers=READ)).json()
    return [(t["to_stage"], t["at"], t["reason"]) for t in doc["transitions"]]


async def test_the_sweeper_moves_a_customer_whose_p_alive_fell_below_the_threshold(
    client: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine
) -> None:
    await send_events(
        common,
        *purchases("frequent", [3 * n for n in range(10)]),  # x = 9, t_x = 27 days
        *purchases("occasional", [0, 27]),  # x = 1: stays above 0.3 until it is quiet
    )
    await until_events(client, "frequent", 10)
    await until_events(client, "occasional", 2)
    topic = common.topics.lifecycle
    # no model yet: the rule has nothing to read, nothing moves
    assert await ModelCache(db, 0).for_rules(ON) is None
    version = await fitted_model(db)
    assert await ModelCache(db, 0).for_rules(LifecycleRules()) is None  # rule off: no model
    model = await ModelCache(db, 0).for_rules(ON)
    assert model is not None
    assert model.version == version

    crossing = DAY0 + timedelta(days=CROSSING_DAY)
    before = crossing - timedelta(seconds=1)
    assert await sweep_once(db, ON, before, lifecycle_topic=topic, model=model) == 0
    assert await sweep_once(db, ON, crossing, lifecycle_topic=topic, model=model) == 1
    assert await sweep_once(db, ON, crossing, lifecycle_topic=topic, model=model) == 0

    frequent = await read_customer(client, "frequent")
    assert frequent is not None
    assert frequent["stage"] == "at_risk"
    assert frequent["stage_entered_at"] == crossing.isoformat()
    reason = f"p_alive 0.2989 < 0.3 (model {version})"
    assert reason == lapse_reason(p_alive(model, 9, 27, CROSSING_DAY), 0.3, version)
    assert (await history(client, "frequent"))[-1] == ("at_risk", crossing.isoformat(), reason)
    occasional = await read_customer(client, "occasional")
    assert occasional is not None
    assert occasional["stage"] == "retention"

    records = await read_topic(common.kafka.bootstrap, topic, expect=13)
    time_records = [orjson.loads(r.value) for r in records]
    time_records = [r for r in time_records if r.get("kind") == "time"]
    assert [(r["customer_id"], r["transition"]["reason"]) for r in time_records] == [
        ("frequent", reason)
    ]

    # the occasional buyer goes at risk by inactivity, 60 days after its last purchase
    quiet = DAY0 + timedelta(days=27 + 60, hours=10)
    assert await sweep_once(db, ON, quiet, lifecycle_topic=topic, model=model) == 1
    assert (await history(client, "occasional"))[-1] == ("at_risk", quiet.isoformat(), "inactive")


async def test_the_batch_path_makes_the_same_move_before_a_later_event(
    common: CommonSettings, db: AsyncEngine, tmp_path: Path
) -> None:
    rules = tmp_path / "lifecycle.yaml"
    rules.write_text("version: 1\nat_risk:\n  inactive_days: 60\n  p_alive_below: 0.3\n")
    version = await fitted_model(db)
    settings = StageEngineSettings(stage_engine_idle_recheck_s=0.5, stage_engine_rules_path=rules)
    async with app_client(create_app(settings), "http://engine") as client:
        await send_events(common, *purchases("batch", [3 * n for n in range(10)]))
        await until_events(client, "batch", 10)
        visit = event_doc(
            "site_visit", customer_id="batch", event_id="batch-visit", occurred_at=at(55)
        )
        await send_events(common, visit)
        customer = await until_events(client, "batch", 11)
        crossing = (DAY0 + timedelta(days=CROSSING_DAY)).isoformat()
        assert customer["stage"] == "at_risk"
        assert customer["stage_entered_at"] == crossing
        reason = f"p_alive 0.2989 < 0.3 (model {version})"
        assert (await history(client, "batch"))[-1] == ("at_risk", crossing, reason)


def test_a_threshold_outside_0_to_1_stops_the_engine_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "lifecycle.yaml"
    bad.write_text("version: 1\nat_risk:\n  inactive_days: 60\n  p_alive_below: 30\n")
    with pytest.raises(RulesError, match=r"lifecycle.yaml:4: at_risk.p_alive_below"):
        create_app(StageEngineSettings(stage_engine_rules_path=bad))
