"""One invariant, enforced (issue 29): random journeys played through the REAL stage engine
handler (batches, late events, identity merges, explicit merges, erasures, sweeps at chosen
clock times), its outbox records counted by the REAL metrics handler in outbox order; at
quiescence every KPI of several past windows, read through the metrics service, equals the
brute-force truth of the surviving events, the metrics' stage counts of a window ending now
equal the engine's ``GET /v1/stages``, no count is negative and every window's stage counts
at its start plus its flows equal those at its end.

Plans: events arriving in event-time order with no merge or erasure (held with the
``clm.lifecycle.v1`` records already), any arrival order with merges and erasures (needs the
``clm.lifecycle.v2`` restatements), the same with records of different keys interleaved as
partitions deliver them, and with anonymisations; the engine's stages are held to the same
truth on its own. The property is shown able to fail: a metrics handler with a deliberately
wrong retraction fails it on fixed small examples.

Each example empties the database (TRUNCATE) and plays on it; hypothesis is derandomized and
keeps no example database, so CI plays the same examples. ``CLM_PROPERTY_SHRINK=1`` shrinks a
failing example (slow: each try replays on Postgres). A failure lists every difference (which
KPI of which window, expected and got) and the plan played.

Bugs these tests found, fixed and kept as fixed examples: a merged-away customer's anonymous
ids still linked to it; an anonymised id coming back counted as its pseudonym (cohort rows
not renamed; a rename inside a batch numbering the new profile's events as the old one's);
a second erasure of an id deduplicated away (one record id per id); an id anonymised twice a
500.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain.events import parse_event
from clm_domain.lifecycle import event_order
from clm_infra.db import create_engine
from clm_metrics.handler import LifecycleHandler
from clm_simulator.survivors import Anonymise, Erase, Merge
from clm_stage_engine.settings import StageEngineSettings
from tests.integration.conftest import NO_REQUEST_LIMITS
from tests.integration.lifecycle_world import (
    ANONYMOUS,
    CUSTOMERS,
    SPAN_MINUTES,
    T0,
    Deliver,
    Drain,
    Played,
    Step_,
    SweepAt,
    World,
    engine_api,
    engine_problems,
    event,
    owner_of,
    problems,
    reset,
    truth_steps,
    windows,
)
from tests.keys import ADMIN

KINDS = (
    "site_visit",
    "ad_click",
    "email_engagement",
    "signup",
    "identify",
    "purchase",
    "purchase",
    "refund",
    "ticket_open",
    "ticket_solve",
    "review",
    "nps_response",
    "marketing_spend",
)
ANONYMOUS_KINDS = ("site_visit", "ad_click", "email_engagement", "signup", "ticket_open")
PHASES = (Phase.explicit, Phase.generate) + (
    (Phase.shrink,) if os.environ.get("CLM_PROPERTY_SHRINK") else ()
)


def property_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=PHASES,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=False,
    )


@pytest.fixture(scope="module")
def env(module_env: dict[str, str]) -> dict[str, str]:
    """This module's database, topics and keys (the settings in the environment)."""
    return module_env


Mutation = Callable[[dict[str, Any]], dict[str, Any] | None]


class Mutated:
    """The metrics handler, fed records a mutation changed (None: dropped); counts how many
    records it touched, so a test knows its mutation was exercised."""

    def __init__(self, mutate: Mutation) -> None:
        self.inner = LifecycleHandler()
        self.mutate = mutate
        self.touched = 0

    async def __call__(self, conn: Any, records: Sequence[Any]) -> Any:
        kept = []
        for record in records:
            doc = orjson.loads(record.value)
            changed = self.mutate(orjson.loads(record.value))
            if changed != doc:
                self.touched += 1
            if changed is not None:
                kept.append(type(record)(record.key, orjson.dumps(changed), offset=record.offset))
        return await self.inner(conn, kept)


@asynccontextmanager
async def fresh_engine() -> AsyncIterator[tuple[AsyncEngine, Any, str]]:
    """An emptied database and a stage engine on it: (database, the engine's API, its
    lifecycle topic)."""
    settings = StageEngineSettings(**NO_REQUEST_LIMITS)
    db = create_engine(settings.database.url, pool_size=3)
    try:
        await reset(db)
        async with engine_api(settings, db) as api:
            yield db, api, settings.topics.lifecycle
    finally:
        await db.dispose()


def play(
    plan: Sequence[Step_],
    extra: Sequence[tuple[int, int]] = (),
    metrics: Any = None,
    *,
    fixed: bool = False,
) -> tuple[list[str], Played]:
    """Play ``plan`` on an emptied database and list what differs from the truth
    (``fixed``: a hand-made plan, played as it is)."""

    async def go() -> tuple[list[str], Played]:
        async with fresh_engine() as (db, api, topic):
            world = World(db, api, topic, metrics, windows(extra))
            world.avoid_stale_links = world.avoid_stale_links and not fixed
            played = await world.play(plan)
            return await problems(world), played

    return asyncio.run(go())


def play_engine(plan: Sequence[Step_]) -> tuple[list[str], Played]:
    """Play ``plan`` and list how the engine's customers differ from the truth's."""

    async def go() -> tuple[list[str], Played]:
        async with fresh_engine() as (db, api, topic):
            world = World(db, api, topic)
            played = await world.play(plan)
            return await engine_problems(world, truth_steps(world)), played

    return asyncio.run(go())


def verdict(plan: Sequence[Step_], found: list[str], played: Played) -> str:
    shown = "\n  ".join(found[:40])
    more = f"\n  … and {len(found) - 40} more" if len(found) > 40 else ""
    steps = "\n  ".join(repr(s) for s in plan)
    made = [op for op in played.history if isinstance(op, Merge | Erase | Anonymise)]
    return (
        f"{len(found)} differences from the truth of the surviving events:\n  {shown}{more}\n"
        f"records counted by kind: {played.kinds}; merges and erasures made: {made}\n"
        f"plan:\n  {steps}"
    )


# --- strategies -------------------------------------------------------------------------


@st.composite
def journeys(draw: st.DrawFn, *, anonymous_first: bool) -> list[dict[str, Any]]:
    """4 to 16 events of a few customers and their anonymous ids. ``anonymous_first``:
    anonymous-only events may come before their id is identified (an identity merge)."""
    docs = []
    for n in range(draw(st.integers(4, 16))):
        kind = draw(st.sampled_from(KINDS))
        minute = draw(st.integers(0, SPAN_MINUTES))
        variant = draw(st.integers(0, 29))
        cid: str | None = draw(st.sampled_from(CUSTOMERS))
        anon: str | None = None
        owned = [a for a in ANONYMOUS if owner_of(a) == cid]
        if kind == "identify":
            anon = draw(st.sampled_from(owned))
        elif kind in ANONYMOUS_KINDS and draw(st.booleans()):
            anon, cid = draw(st.sampled_from(owned)), None
        docs.append(event(n, kind, cid=cid, anon=anon, minute=minute, variant=variant))
    return docs if anonymous_first else _identified_first(docs)


def _identified_first(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documents in event-time order, an anonymous id's first event carrying its
    customer's id too (it links them): no anonymous profile is ever merged."""
    docs = sorted(docs, key=lambda d: event_order(parse_event(d)))
    linked: set[str] = set()
    out = []
    for doc in docs:
        anon = doc.get("anonymous_id")
        if anon is not None and anon not in linked:
            linked.add(anon)
            doc = {**doc, "customer_id": owner_of(anon)}
        out.append(doc)
    return out


def _at(doc: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(doc["occurred_at"])


def _batches(draw: st.DrawFn, docs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    cuts = draw(st.lists(st.booleans(), min_size=len(docs), max_size=len(docs)))
    out: list[list[dict[str, Any]]] = []
    for doc, cut in zip(docs, cuts, strict=True):
        if cut or not out:
            out.append([])
        out[-1].append(doc)
    return out


@st.composite
def in_order_plans(draw: st.DrawFn) -> list[Step_]:
    """Events in event-time order, in random batches; sweeps between batches at a time
    between them (the sweeper's clock is the wall clock); the metrics catch up at random,
    customers' records interleaved as partitions may deliver them."""
    docs = draw(journeys(anonymous_first=False))
    plan: list[Step_] = []
    batches = _batches(draw, docs)
    for n, batch in enumerate(batches):
        plan.append(Deliver(tuple(batch)))
        if n + 1 < len(batches) and draw(st.booleans()):
            low, high = _at(batch[-1]), _at(batches[n + 1][0])
            share = draw(st.integers(0, 4))
            plan.append(SweepAt(low + (high - low) * share / 4))
        if draw(st.booleans()):
            plan.append(Drain(draw(INTERLEAVE)))
    return plan


@st.composite
def any_order_plans(
    draw: st.DrawFn, *, interleave: bool = False, anonymise: bool = False
) -> list[Step_]:
    """Any arrival order (late events), repeats, random batches; sweeps at random clock
    times; explicit merges and erasures between batches; the metrics catch up at random (in
    outbox order, or with ``interleave`` as partitions may deliver the records); with
    ``anonymise``, anonymisations too."""
    docs = draw(journeys(anonymous_first=True))
    order = list(draw(st.permutations(docs)))
    for _ in range(draw(st.integers(0, 2))):  # a client sends an event again
        order.insert(draw(st.integers(0, len(order))), draw(st.sampled_from(docs)))
    plan: list[Step_] = []
    for batch in _batches(draw, order):
        plan.append(Deliver(tuple(batch)))
        actions = ("", "", "", "sweep", "merge", "erase", *(("anonymise",) if anonymise else ()))
        action = draw(st.sampled_from(actions))
        if action == "sweep":
            plan.append(SweepAt(T0 + timedelta(minutes=draw(st.integers(0, SPAN_MINUTES)))))
        elif action == "merge":
            into, source = draw(st.permutations(CUSTOMERS))[:2]
            plan.append(Merge(into=into, source=source))
        elif action == "erase":
            plan.append(Erase(draw(st.sampled_from(CUSTOMERS))))
        elif action == "anonymise":  # the pseudonym is the engine's
            plan.append(Anonymise(draw(st.sampled_from(CUSTOMERS)), "?"))
        if draw(st.booleans()):
            plan.append(Drain(draw(INTERLEAVE) if interleave else None))
    return plan


#: A drain's order: the outbox's (None) or keys interleaved (a seed).
INTERLEAVE = st.one_of(st.none(), st.integers(0, 2**16))
#: Extra windows: (minutes from T0, minutes long).
EXTRA = st.lists(
    st.tuples(st.integers(-60, SPAN_MINUTES), st.integers(1, 4 * 24 * 60)), min_size=1, max_size=2
)


# --- the property -----------------------------------------------------------------------


@pytest.mark.timeout(240)
@property_settings(25)
@given(plan=in_order_plans(), extra=EXTRA)
def test_in_order_journeys_every_kpi_equals_the_truth(
    env: dict[str, str], plan: list[Step_], extra: list[tuple[int, int]]
) -> None:
    found, played = play(plan, extra)
    assert not found, verdict(plan, found, played)


@pytest.mark.timeout(240)
@property_settings(20)
@given(plan=any_order_plans(), extra=EXTRA)
def test_late_events_merges_and_erasures_every_kpi_equals_the_truth(
    env: dict[str, str], plan: list[Step_], extra: list[tuple[int, int]]
) -> None:
    found, played = play(plan, extra)
    assert not found, verdict(plan, found, played)


@pytest.mark.timeout(240)
@property_settings(12)
@given(plan=any_order_plans(interleave=True), extra=EXTRA)
def test_records_of_several_partitions_in_any_order_every_kpi_equals_the_truth(
    env: dict[str, str], plan: list[Step_], extra: list[tuple[int, int]]
) -> None:
    """An anonymous profile's records and its identity merge's are keyed differently, so
    partitions may deliver them in either order: the counts do not depend on it."""
    found, played = play(plan, extra)
    assert not found, verdict(plan, found, played)


@pytest.mark.timeout(240)
@property_settings(10)
@given(plan=any_order_plans(anonymise=True), extra=EXTRA)
def test_with_anonymisations_every_kpi_equals_the_truth(
    env: dict[str, str], plan: list[Step_], extra: list[tuple[int, int]]
) -> None:
    found, played = play(plan, extra)
    assert not found, verdict(plan, found, played)


@pytest.mark.timeout(240)
@property_settings(20)
@given(plan=any_order_plans(anonymise=True))
def test_late_events_merges_and_erasures_engine_stages_equal_the_truth(
    env: dict[str, str], plan: list[Step_]
) -> None:
    """The truth of the surviving events agrees with the engine on every customer's stage
    (the engine rebuilds customers from their events; this holds on v1 already)."""
    found, played = play_engine(plan)
    assert not found, verdict(plan, found, played)


# --- proven able to fail ----------------------------------------------------------------


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


DAY = 24 * 60
EXAMPLES: dict[str, list[Step_]] = {
    # a purchase, then quiet: the sweeper moves the customer to at_risk and churned
    "sweeps": [
        Deliver((event(1, "purchase", cid="c0", anon=None, minute=60, variant=0),)),
        SweepAt(at(3 * DAY)),
        Deliver((event(2, "site_visit", cid="c1", anon=None, minute=4 * DAY, variant=1),)),
    ],
    # the first purchase arrives after the second: new customer, repeat purchase and flows
    # move to their event times
    "late event": [
        Deliver((event(1, "purchase", cid="c0", anon=None, minute=5 * DAY, variant=0),)),
        Drain(),
        Deliver((event(2, "purchase", cid="c0", anon=None, minute=DAY, variant=0),)),
    ],
    # an anonymous visitor later identified: its first touch becomes the customer's
    "identity merge": [
        Deliver((event(1, "site_visit", cid=None, anon="a0", minute=60, variant=4),)),
        Drain(),
        Deliver((event(2, "identify", cid="c0", anon="a0", minute=2 * DAY, variant=0),)),
    ],
    # two known customers merged: one new customer, one repeat purchase
    "customer merge": [
        Deliver(
            (
                event(1, "purchase", cid="c0", anon=None, minute=DAY, variant=0),
                event(2, "purchase", cid="c1", anon=None, minute=2 * DAY, variant=0),
            )
        ),
        Drain(),
        Merge(into="c0", source="c1"),
    ],
    # the anonymous id of a merged-away customer: its later visits count for the survivor
    "anonymous id of a merged customer": [
        Deliver(
            (
                event(1, "purchase", cid="c0", anon=None, minute=DAY, variant=0),
                event(2, "site_visit", cid="c1", anon="a1", minute=DAY, variant=0),
            )
        ),
        Merge(into="c0", source="c1"),
        Deliver((event(3, "site_visit", cid=None, anon="a1", minute=2 * DAY, variant=0),)),
    ],
    # an anonymised customer stays counted under its pseudonym; its id, back, is a new one
    "anonymised id back": [
        Deliver((event(1, "purchase", cid="c1", anon=None, minute=60, variant=0),)),
        Drain(),
        Anonymise("c1", "?"),
        Drain(),
        Deliver((event(2, "purchase", cid="c1", anon=None, minute=DAY, variant=0),)),
    ],
    # a redelivered event of an anonymised id is not a new one: no row comes back to erase
    "anonymised id redelivered": [
        Deliver((event(1, "purchase", cid="c1", anon=None, minute=60, variant=0),)),
        Anonymise("c1", "?"),
        Deliver((event(1, "purchase", cid="c1", anon=None, minute=60, variant=0),)),
        Erase("c1"),
    ],
    # ... and erasing the new one takes back only its own
    "anonymised id back, erased": [
        Deliver((event(1, "site_visit", cid="c1", anon=None, minute=60, variant=0),)),
        Drain(),
        Anonymise("c1", "?"),
        Drain(),
        Deliver((event(2, "purchase", cid="c1", anon=None, minute=DAY, variant=0),)),
        Drain(),
        Erase("c1"),
    ],
    # an erased customer counts nowhere, even in the past
    "erasure": [
        Deliver(
            (
                event(1, "purchase", cid="c0", anon=None, minute=DAY, variant=0),
                event(2, "site_visit", cid="c1", anon=None, minute=DAY, variant=1),
            )
        ),
        Drain(),
        Erase("c0"),
    ],
}
#: Ignoring this example's restatement changes nothing its KPIs show (the anonymous profile's
#: timeline taken back equals what the merged one adds there), so that mutation cannot fail.
NET_ZERO = pytest.mark.xfail(
    reason="the identity-merge example's restatement is net zero in its KPIs", strict=True
)


def _drop_kind(kind: str) -> Mutation:
    return lambda doc: None if doc.get("kind") == kind else doc


def _drop_one_retract_item(doc: dict[str, Any]) -> dict[str, Any] | None:
    """A restatement that forgets the last item of its first non-empty retract timeline."""
    if doc.get("kind") != "restatement":
        return doc
    for timeline in doc.get("retract", []):
        if timeline.get("items"):
            timeline["items"] = timeline["items"][:-1]
            break
    return doc


MUTATIONS: dict[str, tuple[Mutation, list[str]]] = {
    # mutation: (the wrong metrics handler, the examples it must be caught on)
    "ignores sweeper records": (_drop_kind("time"), ["sweeps"]),
    "ignores restatements": (
        _drop_kind("restatement"),
        ["late event", "identity merge", "customer merge", "erasure"],
    ),
    "drops one retract item": (
        _drop_one_retract_item,
        ["late event", "identity merge", "customer merge", "erasure"],
    ),
}


def _cases() -> Iterator[Any]:
    for mutation, (_, examples) in MUTATIONS.items():
        for example in examples:
            net_zero = (mutation, example) == ("ignores restatements", "identity merge")
            marks = (NET_ZERO,) if net_zero else ()
            yield pytest.param(mutation, example, id=f"{mutation}-{example}", marks=marks)


@pytest.mark.parametrize(
    "example",
    list(EXAMPLES),
)
def test_the_fixed_examples_equal_the_truth(env: dict[str, str], example: str) -> None:
    """The control of the test below: unmutated, each example passes."""
    found, played = play(EXAMPLES[example], fixed=True)
    assert not found, verdict(EXAMPLES[example], found, played)


@pytest.mark.parametrize(("mutation", "example"), list(_cases()))
def test_a_wrong_retraction_fails_the_property(
    env: dict[str, str], mutation: str, example: str
) -> None:
    wrong = Mutated(MUTATIONS[mutation][0])
    found, _ = play(EXAMPLES[example], metrics=wrong, fixed=True)
    assert wrong.touched, f"the mutation {mutation!r} changed no record of {example!r}"
    assert found, f"the property missed a metrics handler that {mutation} on {example!r}"


def test_anonymising_an_id_again_is_not_a_server_error(env: dict[str, str]) -> None:
    """Found by the property: a customer anonymised, back with a new event, anonymised
    again: the second pseudonym is the first's (a keyed hash of the id), so the engine says
    so (409, erase it instead) rather than failing on its primary key (a 500)."""
    plan: list[Step_] = [
        Deliver((event(1, "purchase", cid="c0", anon=None, minute=DAY, variant=0),)),
        Anonymise("c0", "?"),
        Deliver((event(2, "purchase", cid="c0", anon=None, minute=2 * DAY, variant=0),)),
    ]

    async def go() -> int:
        settings = StageEngineSettings(**NO_REQUEST_LIMITS)
        db = create_engine(settings.database.url, pool_size=3)
        try:
            await reset(db)
            async with engine_api(settings, db) as api:
                world = World(db, api, settings.topics.lifecycle)
                await world.play(plan)
                again = await api.delete(
                    "/v1/customers/c0",
                    params={"mode": "anonymise"},
                    headers=ADMIN,
                )
                return again.status_code
        finally:
            await db.dispose()

    assert asyncio.run(go()) == 409
