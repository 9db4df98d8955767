"""A small world for the KPI invariants (issue 29): journeys, arrival plans, and the real
stage engine and metrics handlers played on Postgres, then compared with the brute-force truth.

The world's clock is simulated: events are dated from :data:`T0` (in the past, so the
engine's erasures, stamped with Postgres' clock, drop every later-arriving event of an erased
customer), the engine's own ``datetime.now()`` reads :class:`SimClock` while a plan plays, and
the sweeper runs at the plan's times. Quiescence is a last sweep at :data:`END` with every
outbox record counted by the metrics handler.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain.events import EXAMPLE_PROPERTIES
from clm_domain.kpis import window_bounds
from clm_domain.lifecycle import Stage
from clm_domain.pseudonyms import DEV_PSEUDONYM_KEY, Pseudonyms
from clm_domain.rules import LifecycleRules
from clm_infra import webhook_secrets
from clm_infra.privacy.ciphers import master_keys
from clm_infra.schema import customers, stage_counts
from clm_infra.webhook_urls import UrlPolicy
from clm_metrics import service
from clm_metrics.closed_days import ClosedDayCache
from clm_metrics.forecasts import Forecasts
from clm_metrics.formulas import WindowInputs, compute_kpis, lifecycle_map
from clm_metrics.handler import LifecycleHandler
from clm_predict.live import Horizon
from clm_simulator.replay import Step, Sweep, stages_as_of, stages_at, sweeps
from clm_simulator.survivors import Anonymise, Erase, Merge, Operation, replay_surviving
from clm_simulator.truth import truth
from clm_stage_engine import repository
from clm_stage_engine.app import create_app
from clm_stage_engine.deps import State
from clm_stage_engine.handler import EventsHandler
from clm_stage_engine.model_cache import ModelCache
from clm_stage_engine.outbox import unpack_records
from clm_stage_engine.settings import StageEngineSettings
from clm_stage_engine.sweeper import sweep_once
from clm_web.auth import KeyVerifier
from tests.keys import ADMIN, READ
from tests.kpi_truth import truth_cohorts, truth_map
from tests.records import Record

T0 = datetime(2026, 3, 2, tzinfo=UTC)
SPAN_MINUTES = 10 * 24 * 60  # events are dated in [T0, T0 + 10 days]
END = T0 + timedelta(days=12)  # the last sweep, and "now" for every read
#: Short inactivity thresholds, so a few days of journeys reach at_risk and churned.
RULES = LifecycleRules.model_validate(
    {"at_risk": {"inactive_days": 2}, "churned": {"inactive_days": 4}}
)
CUSTOMERS = ("c0", "c1", "c2")
ANONYMOUS = ("a0", "a1", "a2", "a3")  # a<i> belongs to c<i % 3>
CURRENCY = "USD"
#: Random plans may send anonymous-only events of a merged-away customer's anonymous ids (the
#: engine points those links at the survivor).
AVOID_STALE_LINKS = False


def owner_of(anon: str) -> str:
    return CUSTOMERS[int(anon[1:]) % len(CUSTOMERS)]


# --- the plan -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deliver:
    """A batch of event documents reaching the stage engine's handler."""

    docs: tuple[dict[str, Any], ...]

    def __repr__(self) -> str:
        return f"Deliver({[brief(d) for d in self.docs]})"


@dataclass(frozen=True, slots=True)
class SweepAt:
    at: datetime


@dataclass(frozen=True, slots=True)
class Drain:
    """The metrics handler counts the outbox records written so far (one batch): in outbox
    order, or (``interleave``: a seed) as partitions deliver them, each key's records in
    order but different keys' interleaved at random."""

    interleave: int | None = None


Step_ = Deliver | SweepAt | Drain | Merge | Erase | Anonymise


def brief(doc: dict[str, Any]) -> str:
    """A document in one line, for failure reports."""
    who = "+".join(str(doc[k]) for k in ("customer_id", "anonymous_id") if k in doc)
    minutes = int((datetime.fromisoformat(doc["occurred_at"]) - T0).total_seconds() // 60)
    p = doc["properties"]
    extra = p.get("status") or p.get("currency") or p.get("campaign") or ""
    return f"{doc['event_id']}:{doc['type']}:{who or '-'}@{minutes}m:{doc.get('channel', '')}{':' + str(extra) if extra else ''}"


def event(
    n: int, kind: str, *, cid: str | None, anon: str | None, minute: int, variant: int
) -> dict[str, Any]:
    """Event ``n`` of a journey: ``kind`` is a type or a variant of one (ticket open/solve)."""
    channels = ("email", "paid_search", None)
    type_ = {"ticket_open": "support_ticket", "ticket_solve": "support_ticket"}.get(kind, kind)
    props: dict[str, Any] = dict(EXAMPLE_PROPERTIES[type_])
    amount = ("10.00", "25.50", "7.25")[variant % 3]
    currency = ("USD", "EUR")[variant % 2]
    if type_ in ("purchase", "refund"):
        props = {"order_id": f"o{n}", "amount": amount, "currency": currency}
    elif kind in ("ticket_open", "ticket_solve"):
        who = cid or (owner_of(anon) if anon else "x")
        props = {
            "ticket_id": f"t-{who}-{variant % 2}",
            "status": "opened" if kind == "ticket_open" else "solved",
            **({"csat": 1 + variant % 5} if kind == "ticket_solve" else {}),
        }
    elif type_ == "review":
        props = {"rating": 1 + variant % 5}
    elif type_ == "nps_response":
        props = {"score": variant % 11}
    elif type_ in ("ad_click", "email_engagement"):
        props = {**props, "campaign": ("spring", "summer")[variant % 2]}
    elif type_ == "marketing_spend":
        start = T0 + timedelta(minutes=minute)
        props = {
            "channel": ("email", "paid_search")[variant % 2],
            "campaign": ("spring", "summer")[variant % 2],
            "amount": amount,
            "currency": currency,
            "period_start": start.isoformat(),
            "period_end": (start + timedelta(hours=1)).isoformat(),
        }
    doc: dict[str, Any] = {
        "event_id": f"e{n}",
        "type": type_,
        "occurred_at": (T0 + timedelta(minutes=minute)).isoformat(),
        "source": ("shop", "app")[variant % 2],
        "properties": props,
    }
    if (channel := channels[variant % 3]) is not None:
        doc["channel"] = channel
    if type_ != "marketing_spend":
        if cid is not None:
            doc["customer_id"] = cid
        if anon is not None:
            doc["anonymous_id"] = anon
    return doc


# --- the engine's clock -----------------------------------------------------------------------


class SimClock:
    """Stands in for the ``datetime`` class in the engine's modules: ``now()`` is the
    simulation's clock; everything else (constructors, ``fromisoformat``, ``isinstance``)
    is ``datetime``'s own, so no other value changes type."""

    def __init__(self) -> None:
        self.current = T0

    def now(self, tz: Any = None) -> datetime:
        return self.current if tz is None else self.current.astimezone(tz)

    def __getattr__(self, name: str) -> Any:
        return getattr(datetime, name)

    def __call__(self, *args: Any, **kwargs: Any) -> datetime:
        return datetime(*args, **kwargs)

    def __instancecheck__(self, obj: object) -> bool:
        return isinstance(obj, datetime)


@contextmanager
def engine_clock() -> Iterator[SimClock]:
    """Every ``clm_stage_engine`` module's ``datetime`` is a :class:`SimClock` meanwhile (the
    batch handler's rebuilds and the merge endpoint read their ``now`` from it)."""
    clock = SimClock()
    patched = [
        m
        for name, m in list(sys.modules.items())
        if name.startswith("clm_stage_engine") and getattr(m, "datetime", None) is datetime
    ]
    for m in patched:
        m.datetime = clock  # type: ignore[attr-defined]
    try:
        yield clock
    finally:
        for m in patched:
            m.datetime = datetime  # type: ignore[attr-defined]


# --- playing a plan -----------------------------------------------------------------------


@dataclass
class Played:
    """What playing a plan did: its history as the truth needs it (batches as they arrived,
    merges and erasures as made: a plan's merge or erasure naming a customer the engine does
    not know, or no longer, is made on known ones, or left out when there are too few), and
    the records the metrics counted."""

    history: list[Operation] = field(default_factory=list)
    records: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


async def reset(db: AsyncEngine) -> None:
    """Every table emptied but the keys and Alembic's (the segment catalog's row put back)."""
    async with db.begin() as conn:
        names = (
            await conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename NOT IN ('alembic_version', 'api_keys')"
                )
            )
        ).scalars()
        tables = ", ".join(f'"{n}"' for n in names)
        await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        # the segment catalog's one row, as the migration leaves it (every batch reads it)
        await conn.execute(text("INSERT INTO segment_catalog (id, version) VALUES (1, 0)"))


def engine_api(settings: StageEngineSettings, db: AsyncEngine) -> httpx.AsyncClient:
    """The stage engine's HTTP API in-process, on ``db``, without its workers."""
    app = create_app(settings, RULES, hot_read=False)
    app.state.clm = State(
        settings=settings,
        engine=db,
        verifier=KeyVerifier(db, ttl_s=60),
        rules=RULES,
        pseudonyms=Pseudonyms(DEV_PSEUDONYM_KEY),
        secrets_box=webhook_secrets.cipher(settings),
        url_policy=UrlPolicy.of(True, "127.0.0.1"),
        models=ModelCache(db, settings.model.reload_s),
        masters=master_keys(settings),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://engine")


class World:
    """The stage engine and metrics handlers on one database, played step by step."""

    def __init__(
        self,
        db: AsyncEngine,
        api: httpx.AsyncClient,
        topic: str,
        metrics: Any = None,
        windows: Sequence[Window] = (),
    ):
        self.db = db
        self.windows = list(windows)
        # the API's closed-day cache, warmed at the first drain: a count taken back later in
        # a past day must reach reads through it too (its day's counter changes)
        self.cache = ClosedDayCache()
        self.warmed = False
        self.api = api
        self.topic = topic
        self.engine = EventsHandler(topic, RULES, pseudonyms=Pseudonyms(DEV_PSEUDONYM_KEY))
        self.metrics = metrics if metrics is not None else LifecycleHandler()
        self.outbox_seen = 0
        self.offset = 0
        self.known: set[str] = set()  # customer ids with a row, as far as the plan knows
        self.delivered: set[tuple[str | None, str]] = set()  # (source, event id) sent
        self.merged: dict[str, str] = {}  # merged-away id → survivor
        self.erased: set[str] = set()
        self.anonymised: set[str] = set()
        self.links: dict[str, str] = {}  # anonymous id → the customer its first link named
        self.avoid_stale_links = AVOID_STALE_LINKS
        self.played = Played()

    async def play(self, plan: Sequence[Step_]) -> Played:
        with engine_clock() as clock:
            clock.current = T0
            for step in plan:
                await self.step(clock, step)
            clock.current = END
            await sweep_once(self.db, RULES, END, lifecycle_topic=self.topic)
            await self.drain()
        return self.played

    async def step(self, clock: SimClock, step: Step_) -> None:
        if isinstance(step, Deliver):
            latest = max(datetime.fromisoformat(d["occurred_at"]) for d in step.docs)
            clock.current = max(clock.current, latest)
            await self.deliver(step.docs)
        elif isinstance(step, SweepAt):
            clock.current = max(clock.current, step.at)
            await sweep_once(self.db, RULES, clock.current, lifecycle_topic=self.topic)
        elif isinstance(step, Drain):
            await self.drain(step.interleave)
        elif isinstance(step, Merge):
            await self.merge(step)
        elif isinstance(step, Erase):
            await self.erase(step)
        else:
            await self.anonymise(step)

    async def deliver(self, docs: Sequence[dict[str, Any]]) -> None:
        for doc in docs:
            anon = doc.get("anonymous_id")
            if anon is not None and "customer_id" in doc:
                self.links.setdefault(anon, doc["customer_id"])
        if self.avoid_stale_links:  # anonymous-only events of a merged-away customer's ids
            docs = [d for d in docs if self.links.get(d.get("anonymous_id", "")) not in self.merged]
        if not docs:
            return
        records = []
        for doc in docs:
            self.offset += 1
            key = str(doc.get("customer_id") or doc.get("anonymous_id") or "spend")
            records.append(Record(key.encode(), orjson.dumps(doc), offset=self.offset))
        async with self.db.begin() as conn:
            result = await self.engine(conn, records)
        assert not result.poison, [p.reason for p in result.poison]
        self.played.history.append(list(docs))
        for doc in docs:
            cid = doc.get("customer_id")
            ident = (doc.get("source"), doc["event_id"])
            new = ident not in self.delivered  # a redelivery brings no row back
            self.delivered.add(ident)
            if new and cid is not None and not {cid, doc.get("anonymous_id")} & self.erased:
                self.known.add(cid)

    def usable(self, *ids: str) -> bool:
        return all(i in self.known and i not in self.merged and i not in self.erased for i in ids)

    def usable_ones(self, *wanted: str) -> list[str]:
        """``wanted`` where usable, then the other usable customers, without repeats."""
        ordered = [*wanted, *sorted(self.known)]
        return [c for n, c in enumerate(ordered) if self.usable(c) and c not in ordered[:n]]

    async def merge(self, op: Merge) -> None:
        choice = self.usable_ones(op.into, op.source)
        if len(choice) < 2:
            return
        op = Merge(into=choice[0], source=choice[1])
        answer = await self.api.post(
            f"/v1/customers/{op.into}/merge",
            json={"from": op.source},
            headers=ADMIN,
        )
        assert answer.status_code == 200, answer.text
        self.merged[op.source] = op.into
        self.played.history.append(op)

    async def erase(self, op: Erase) -> None:
        choice = self.usable_ones(op.customer_id)
        if not choice:
            return
        op = Erase(choice[0])
        answer = await self.api.delete(
            f"/v1/customers/{op.customer_id}",
            params={"mode": "erase"},
            headers=ADMIN,
        )
        assert answer.status_code == 200, answer.text
        gone = {op.customer_id}
        while more := {m for m, into in self.merged.items() if into in gone} - gone:
            gone |= more  # merged-away ids went with their survivor
        self.erased |= gone
        self.played.history.append(op)

    async def anonymise(self, op: Anonymise) -> None:
        """``op``'s customer (or another usable one) anonymised; its pseudonym is the
        engine's (the plan's is ignored)."""
        # an id anonymised before has its pseudonym taken: the engine answers 500 (see
        # test_anonymising_an_id_again_is_not_a_server_error)
        choice = [c for c in self.usable_ones(op.customer_id) if c not in self.anonymised]
        if not choice:
            return
        cid = choice[0]
        self.anonymised.add(cid)
        answer = await self.api.delete(
            f"/v1/customers/{cid}",
            params={"mode": "anonymise"},
            headers=ADMIN,
        )
        assert answer.status_code == 200, answer.text
        gone = {cid}
        while more := {m for m, into in self.merged.items() if into in gone} - gone:
            gone |= more
        for i in gone:  # no row under these ids until an event of theirs comes again
            self.known.discard(i)
            self.merged.pop(i, None)
        self.played.history.append(Anonymise(cid, answer.json()["pseudonym"]))

    async def drain(self, interleave: int | None = None) -> None:
        """Feed the outbox rows written since the last drain to the metrics handler, in
        outbox order (or interleaved by key, see :class:`Drain`), as one metrics batch."""
        async with self.db.connect() as conn:
            rows = (await conn.execute(_WRITTEN, {"seen": self.outbox_seen})).all()
        records = []
        for row_id, count, key_text, payload in rows:
            self.outbox_seen = max(self.outbox_seen, int(row_id))
            pairs = (
                unpack_records(bytes(payload), int(count))
                if key_text is None
                else [(str(key_text).encode(), bytes(payload))]
            )
            for key, value in pairs:
                self.offset += 1
                records.append(Record(key, value, offset=self.offset))
                kind = str(orjson.loads(value).get("kind"))
                self.played.kinds[kind] = self.played.kinds.get(kind, 0) + 1
        if not records:
            return
        if interleave is not None:
            records = interleaved(records, random.Random(interleave))
        async with self.db.begin() as conn:
            result = await self.metrics(conn, records)
        assert not result.poison, [p.reason for p in result.poison]
        self.played.records += len(records)
        if not self.warmed:  # once: reads then cost a few tens of milliseconds each
            self.warmed = True
            for w in self.windows:
                await w.inputs(self.db, self.cache)


def interleaved(records: Sequence[Record], rng: random.Random) -> list[Record]:
    """``records`` as partitions may deliver them: each key's in order, keys interleaved."""
    queues: dict[bytes, list[Record]] = {}
    for record in records:
        queues.setdefault(record.key or b"", []).append(record)
    out: list[Record] = []
    while queues:
        key = rng.choice(sorted(queues))
        out.append(queues[key].pop(0))
        if not queues[key]:
            del queues[key]
    return out


#: The outbox rows written after ``seen``, in the relay's order: ``outbox_batches`` rows
#: (a blob of records each) and one-record ``outbox`` rows (older writers) share a sequence.
_WRITTEN = text(
    "SELECT id, records, NULL::text AS key, payload FROM outbox_batches WHERE id > :seen"
    " UNION ALL SELECT id, 1, key, payload FROM outbox WHERE id > :seen ORDER BY id"
)


# --- the comparison -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime
    source: str | None = None
    channel: str | None = None

    def __str__(self) -> str:
        def m(at: datetime) -> str:
            return f"T0{(at - T0).total_seconds() / 60:+.0f}m"

        f = "".join(
            f" {k}={v}" for k, v in (("source", self.source), ("channel", self.channel)) if v
        )
        return f"[{m(self.start)}, {m(self.end)}){f}"

    async def inputs(self, db: AsyncEngine, cache: ClosedDayCache | None = None) -> WindowInputs:
        """The window's inputs as the metrics API reads them (``now``: the end of the play),
        the predictive KPIs included (the world has no fitted model: they are null)."""
        return await service.window_inputs(
            db,
            self.start,
            self.end,
            END,
            source=self.source,
            channel=self.channel,
            cache=cache,
            forecasts=Forecasts(CURRENCY, Horizon(), 0),
        )


def windows(extra: Sequence[tuple[int, int]] = ()) -> list[Window]:
    """Every event and move; a day ending now (the API's ``window=24h``); ``extra`` ranges
    (minutes from T0, minutes long); the whole range filtered by a source and a channel."""
    whole = (T0 - timedelta(days=1), END + timedelta(minutes=1))
    out = [Window(*whole), Window(*window_bounds(END, timedelta(hours=24)))]
    out += [Window(T0 + timedelta(minutes=a), T0 + timedelta(minutes=a + n)) for a, n in extra]
    out += [Window(*whole, source="app"), Window(*whole, channel="paid_search")]
    return out


def _negatives(value: Any, path: str) -> list[str]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [f"{path} = {value}"] if value < 0 else []
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _negatives(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in _negatives(v, f"{path}[{i}]")]
    return []


def _differences(label: str, want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    return [
        f"{label} {k}: expected {want.get(k)!r}, got {got.get(k)!r}"
        for k in sorted(set(want) | set(got))
        if want.get(k) != got.get(k)
    ]


def truth_steps(world: World) -> list[Step]:
    """The truth's steps of the surviving events of what the world played."""
    return replay_surviving(world.played.history, now=END, rules=RULES)


async def problems(world: World) -> list[str]:
    """Every way the metrics (read through their service) and the engine differ from the
    truth of the surviving events at quiescence, or break an invariant; [] if none."""
    steps = truth_steps(world)
    swept = sweeps(steps, END, RULES)
    out = await engine_problems(world, steps)
    out += await _stages_now(world)
    for w in world.windows:
        out += await _window(world, w, steps, swept)
    for period in ("month", "week"):
        async with world.db.connect() as conn:
            got = await service.cohort_table(conn, period)
        want = truth_cohorts(steps, period)
        if got != want:
            out.append(f"cohorts by {period}: expected {want}, got {got}")
    return out


async def engine_problems(world: World, steps: list[Step]) -> list[str]:
    """How the engine's customers (each one's stage, and the counts ``GET /v1/stages``
    answers) differ from the truth's as of the end; [] if not."""
    out = []
    truth_stages = stages_as_of(steps, END, RULES)
    want = {s.value: 0 for s in Stage}
    for stage in truth_stages.values():
        want[stage.value] += 1
    async with world.db.connect() as conn:
        rows = dict((await conn.execute(select(customers.c.customer_id, customers.c.stage))).all())
    expected_rows = {k: v.value for k, v in truth_stages.items()}
    if rows != expected_rows:
        out.append(f"engine stage per customer: expected {expected_rows}, got {rows}")
    listed = await _engine_counts(world)
    if listed != want:
        out.append(f"engine GET /v1/stages: expected {want}, got {listed}")
    return out


async def _engine_counts(world: World) -> dict[str, int]:
    """The engine's customers per stage, as ``GET /v1/stages`` answers (its
    ``repository.count_by_stage``)."""
    answer = await world.api.get("/v1/stages", headers=READ)
    assert answer.status_code == 200, answer.text
    return {str(k): int(v) for k, v in answer.json()["stages"].items()}


async def _stages_now(world: World) -> list[str]:
    """The metrics' customers per stage now (a window ending now, and their running count)
    equal the engine's."""
    out = []
    engine_counts = await _engine_counts(world)
    async with world.db.connect() as conn:
        counted = await repository.count_by_stage(conn)
        rows = dict(
            (await conn.execute(select(stage_counts.c.stage, stage_counts.c.customers))).all()
        )
    if {s.value: counted.get(s.value, 0) for s in Stage} != engine_counts:
        out.append(f"engine count_by_stage {counted} differs from GET /v1/stages {engine_counts}")
    running = {s.value: int(rows.get(s.value, 0)) for s in Stage}  # no read API: its table
    if running != engine_counts:
        out.append(f"metrics stage_counts table: {running}, but the engine counts {engine_counts}")
    now_window = Window(*window_bounds(END, timedelta(hours=1)))
    inputs = await now_window.inputs(world.db)
    metrics_now = compute_kpis(inputs, reporting_currency=CURRENCY)["customers_by_stage"]
    if metrics_now != engine_counts:
        out.append(
            f"metrics customers_by_stage of {now_window} (ending now): {metrics_now}, "
            f"but GET /v1/stages says {engine_counts}"
        )
    return out


async def _window(world: World, w: Window, steps: list[Step], swept: list[Sweep]) -> list[str]:
    inputs = await w.inputs(world.db)
    got = compute_kpis(inputs, reporting_currency=CURRENCY)
    cached = compute_kpis(await w.inputs(world.db, world.cache), reporting_currency=CURRENCY)
    want = truth(
        steps,
        w.start,
        w.end,
        now=END,
        reporting_currency=CURRENCY,
        source=w.source,
        channel=w.channel,
        swept=swept,
    )
    out = _differences(f"window {w}:", want, got)
    if not out:  # the same through the closed-day cache warmed during the play
        out += _differences(f"window {w} (through the closed-day cache):", want, cached)
    at_start = stages_at(steps, w.start, w.source, w.channel, swept)
    if inputs.stages_at_start != at_start:
        out.append(
            f"window {w}: customers_by_stage_at_start: expected {at_start}, got {inputs.stages_at_start}"
        )
    lmap = lifecycle_map(inputs)
    expected_map = truth_map(steps, w.start, w.end, source=w.source, channel=w.channel, swept=swept)
    out += _differences(
        f"window {w}: lifecycle map",
        expected_map,
        {k: lmap[k] for k in ("transitions", "median_seconds_in_stage")},
    )
    out += _start_plus_flows(w, lmap)
    out += [f"window {w}: negative {n}" for n in _negatives(got, "kpis")]
    out += [f"window {w}: negative {n}" for n in _negatives(inputs.stages_at_start, "at_start")]
    out += [f"window {w}: negative {n}" for n in _negatives(lmap, "lifecycle_map")]
    return out


def _start_plus_flows(w: Window, lmap: dict[str, Any]) -> list[str]:
    """The map's stage counts at the window's start plus the flows it shows equal its counts
    at the end (a profile that left without a flow at its own times breaks it)."""
    moved = dict(lmap["customers_by_stage_at_start"])
    for t in lmap["transitions"]:
        if t["from"]:
            moved[t["from"]] -= t["customers"]
        moved[t["to"]] += t["customers"]
    if moved == lmap["customers_by_stage"]:
        return []
    return [
        f"window {w}: customers_by_stage_at_start + flows = {moved}, "
        f"but customers_by_stage = {lmap['customers_by_stage']}"
    ]
