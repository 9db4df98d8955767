"""The journey simulator, pure: reproducible, valid events, personas agreeing with the reducer,
the truth's notion of time, CSV parsing, pacing and the HTTP client's retry rules."""

from __future__ import annotations

import io
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clm_cli.errors import CliError
from clm_cli.sender import IngestClient, Pacer, Plan, Progress, post_all, retry_after
from clm_domain.events import parse_event
from clm_domain.lifecycle import Stage
from clm_domain.rules import load_rules
from clm_simulator import transactions
from clm_simulator.personas import INTENDED, Persona, SimConfig, simulate
from clm_simulator.replay import next_inactivity_move, replay, stages_as_of, sweeps
from clm_simulator.truth import truth, truth_document

AS_OF = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RULES = load_rules()  # the shipped deploy/config/lifecycle.yaml


def config(seed: int, customers: int = 60, recent: timedelta = timedelta(days=30)) -> SimConfig:
    return SimConfig(seed=seed, customers=customers, as_of=AS_OF, recent=recent)


def test_the_same_seed_gives_the_same_journeys() -> None:
    assert simulate(config(7)).docs == simulate(config(7)).docs
    assert simulate(config(7)).docs != simulate(config(8)).docs


def test_every_event_keeps_the_contract_and_lies_before_as_of() -> None:
    sim = simulate(config(3, customers=120))
    ids = [d["event_id"] for d in sim.docs]
    assert len(ids) == len(set(ids))
    for doc in sim.docs:
        event = parse_event(doc, now=AS_OF)
        assert event.occurred_at <= AS_OF
    types = Counter(d["type"] for d in sim.docs)
    for wanted in (
        "ad_click",
        "site_visit",
        "signup",
        "purchase",
        "refund",
        "support_ticket",
        "nps_response",
        "email_engagement",
        "subscription_cancelled",
        "marketing_spend",
    ):
        assert types[wanted] > 0, wanted
    assert {d["occurred_at"] for d in sim.docs} == {
        d["occurred_at"] for d in sorted(sim.docs, key=lambda d: d["occurred_at"])
    }
    assert [d["occurred_at"] for d in sim.docs] == sorted(d["occurred_at"] for d in sim.docs)


def test_order_values_are_log_normal_ish() -> None:
    amounts = sorted(
        Decimal(d["properties"]["amount"])
        for d in simulate(config(5, customers=400)).docs
        if d["type"] == "purchase"
    )
    median = amounts[len(amounts) // 2]
    assert Decimal(30) < median < Decimal(65)
    assert amounts[-1] > 3 * median  # a long right tail
    assert amounts[0] >= Decimal("1.00")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(min_value=0, max_value=100_000),
    customers=st.integers(min_value=10, max_value=80),
    recent_minutes=st.sampled_from([1, 10, 60, 24 * 60, 30 * 24 * 60, 90 * 24 * 60]),
)
def test_each_persona_ends_in_its_intended_stage_under_the_default_rules(
    seed: int, customers: int, recent_minutes: int
) -> None:
    sim = simulate(config(seed, customers, timedelta(minutes=recent_minutes)))
    steps = replay(sim.docs, now=AS_OF, rules=RULES)
    assert stages_as_of(steps, AS_OF, RULES) == sim.intended()
    assert set(sim.personas.values()) == set(Persona)  # the first ten cover them all
    later = next_inactivity_move(steps, AS_OF, RULES)
    assert later is None or later >= AS_OF + sim_margin()


def sim_margin() -> timedelta:
    return SimConfig(seed=0, customers=0, as_of=AS_OF).margin


def test_every_stage_is_reached() -> None:
    assert set(INTENDED.values()) == set(Stage)


def test_quiet_customers_are_moved_by_events_or_by_the_sweeper() -> None:
    sim = simulate(config(11, customers=300))
    steps = replay(sim.docs, now=AS_OF, rules=RULES)
    swept = sweeps(steps, AS_OF, RULES)
    assert swept, "some quiet customers wait for the sweeper"
    assert all(
        sim.personas[w.after.customer_id] in (Persona.LAPSING, Persona.LAPSED) for w in swept
    )
    by_event = [
        s
        for s in steps
        if s.applied is not None
        and any(t.reason == "inactive" for t in s.applied.transitions)
        and s.event.type == "email_engagement"
    ]
    assert by_event, "and some come back without buying: the event applies the moves"


def purchase(cid: str, at: datetime, n: int) -> dict[str, Any]:
    return {
        "event_id": f"p{n}",
        "type": "purchase",
        "customer_id": cid,
        "occurred_at": at.isoformat(),
        "source": "dev",
        "properties": {"order_id": f"o{n}", "amount": "10.00", "currency": "USD"},
    }


def test_the_truth_counts_the_sweepers_moves_as_of_its_instant() -> None:
    docs = [
        purchase("gone", AS_OF - timedelta(days=200), 1),
        purchase("quiet", AS_OF - timedelta(days=70), 2),
        purchase("fresh", AS_OF - timedelta(days=1), 3),
    ]
    doc = truth_document(docs, as_of=AS_OF, windows={"30d": timedelta(days=30)}, rules=RULES)
    stages = {k: v["stage"] for k, v in doc["customers"].items()}
    assert stages == {"gone": "churned", "quiet": "at_risk", "fresh": "conversion"}
    # the next move: "fresh" goes quiet 60 days after its purchase
    assert doc["valid_until"] == (AS_OF + timedelta(days=59)).isoformat()
    kpis = doc["kpis"]["30d"]["kpis"]
    assert kpis["churned"] == 1  # "gone" churned 20 days ago (180 days after its purchase)
    assert kpis["customers_by_stage"]["at_risk"] == 1
    assert kpis["active_customers_at_start"] == 2  # "gone" at risk, "quiet" converted
    assert doc["kpis"]["30d"]["query"].startswith("/v1/kpis?from=2026-01-30T12:00:00Z&to=")
    # without the sweeper's moves, nobody churned
    steps = replay(docs, now=AS_OF, rules=RULES)
    assert truth(steps, AS_OF - timedelta(days=30), AS_OF, now=AS_OF)["churned"] == 0


# --------------------------------------------------------------------------- CSV
def test_a_csv_of_transactions_becomes_purchases() -> None:
    text = (
        "Customer ID,Date,Amount,Currency\n"
        "c1,2024-01-05,59.90,EUR\n"
        "c2,2024-01-06T10:00:00+02:00,10,\n"
        "\n"
        "c1,2024-03-01 09:30,5.5,usd\n"
    )
    rows = transactions.parse_transactions(text, where="t.csv", currency="GBP")
    assert [(r.line, r.customer_id, r.currency) for r in rows] == [
        (2, "c1", "EUR"),
        (3, "c2", "GBP"),
        (5, "c1", "USD"),
    ]
    assert rows[1].at == datetime(2024, 1, 6, 8, 0, tzinfo=UTC)
    docs = transactions.purchase_events(rows, prefix="csv-t", source="dev")
    for doc in docs:
        parse_event(doc)
    assert docs[0]["event_id"] == "csv-t-l2"
    assert docs[2]["properties"] == {"order_id": "csv-t-l5", "amount": "5.5", "currency": "USD"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "t.csv: the file is empty"),
        ("who,when\nc1,2024-01-01\n", "t.csv:1: the header must name the columns"),
        ("customer_id,date,amount\n", "t.csv: no transactions after the header"),
        (
            "customer_id,date,amount\nc1,2024-01-01,1\nc2,31/01/2024,2\n",
            "t.csv:3: column 2 (date): '31/01/2024' is not an ISO 8601 date",
        ),
        (
            "customer_id,date,amount\nc1,2024-01-01,-3\n",
            "t.csv:2: column 3 (amount): '-3' is not an amount ≥ 0",
        ),
        (
            "customer_id,date,amount\nc1,2024-01-01,1,00\n,2024-01-01,abc\n",
            "t.csv:3: column 1 (customer_id): is empty",
        ),
        (
            "date,amount,customer,currency\n2024-01-01,1,c1,EURO\n",
            "t.csv:2: column 4 (currency): 'EURO' is not an ISO 4217 currency code",
        ),
    ],
)
def test_bad_csv_rows_are_named_by_line_and_column(text: str, message: str) -> None:
    with pytest.raises(transactions.CsvError) as caught:
        transactions.parse_transactions(text, where="t.csv")
    assert message in str(caught.value)


def test_csv_time_can_be_shifted_to_now_or_compressed() -> None:
    rows = transactions.parse_transactions(
        "customer_id,date,amount\na,2024-01-01,1\nb,2024-01-11,1\n", where="t.csv"
    )
    shifted = transactions.shift_to(rows, AS_OF)
    assert [r.at for r in shifted] == [AS_OF - timedelta(days=10), AS_OF]
    squeezed = transactions.compress(rows, AS_OF, 1000)
    assert [r.at for r in squeezed] == [AS_OF, AS_OF + timedelta(seconds=864)]


# --------------------------------------------------------------------------- pacing
def test_the_pacer_keeps_the_target_rate() -> None:
    pacer = Pacer(10.0, burst=10, now=0.0)
    assert pacer.wait_for(10, 0.0) == 0.0  # a burst's worth at once
    assert pacer.wait_for(5, 0.0) == pytest.approx(0.5)  # then 10/s
    assert pacer.wait_for(5, 0.5) == pytest.approx(0.5)  # reserved: 10 events in 1 s
    assert pacer.wait_for(1, 10.0) == 0.0  # refilled (up to the burst)
    sent, now = 0, 0.0
    pacer = Pacer(100.0, now=0.0)
    while now < 10.0:
        now += pacer.wait_for(50, now)
        sent += 50
    assert sent / now == pytest.approx(100.0, rel=0.2)
    assert Pacer(0.0).wait_for(10_000, 0.0) == 0.0  # no limit


def test_progress_reports_the_achieved_rate() -> None:
    class Out:
        text = ""

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None: ...

        def isatty(self) -> bool:
            return False

    ticks = iter([0.0, 10.0, 10.0])
    progress = Progress(50.0, stream=Out(), clock=lambda: next(ticks))  # type: ignore[arg-type]
    progress.accepted = 495
    progress.rejected = 5
    assert progress.line(10.0) == (
        "simulate: 495 accepted, 5 refused, 0 retried in 10.0s: 50.0 events/s (target 50/s)"
    )


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after("5") == 5.0
    assert retry_after(None) is None
    assert retry_after("soon") is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: now


# --------------------------------------------------------------------------- HTTP client
def client_for(answers: list[httpx.Response | Exception]) -> tuple[IngestClient, list[float]]:
    slept: list[float] = []
    pending = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        answer = pending.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def sleep(s: float) -> None:
        slept.append(s)

    client = IngestClient(
        "http://ingest.test",
        "k",
        client=httpx.AsyncClient(transport=httpx.MockTransport(handle)),
        sleep=sleep,
        max_attempts=4,
    )
    return client, slept


DOC = {"event_id": "e1", "type": "signup", "customer_id": "c1"}


async def test_429_and_503_are_retried_after_retry_after() -> None:
    client, slept = client_for(
        [
            httpx.Response(429, headers={"Retry-After": "2"}),
            httpx.Response(503, headers={"Retry-After": "1"}),
            httpx.Response(202, json={"event_id": "e1", "status": "accepted"}),
        ]
    )
    outcome = await client.send([DOC], batch=False)
    assert (outcome.accepted, outcome.retries, slept) == (1, 2, [2.0, 1.0])


async def test_other_4xx_are_never_retried_and_name_the_field() -> None:
    problem = {"errors": [{"field": "properties.amount", "message": "must be ≥ 0"}]}
    client, slept = client_for([httpx.Response(422, json=problem)])
    outcome = await client.send([DOC], batch=False)
    assert outcome.rejected == [("e1", "properties.amount: must be ≥ 0")]
    assert slept == []
    batch_problem = {"errors": [{"field": "events[1].type", "message": "unknown"}]}
    client, _ = client_for([httpx.Response(422, json=batch_problem)])
    outcome = await client.send([DOC, {**DOC, "event_id": "e2"}], batch=True)
    assert outcome.rejected[1] == ("e2", "type: unknown")


async def test_a_bad_key_stops_with_what_to_do() -> None:
    client, slept = client_for([httpx.Response(401, json={"detail": "unknown key"})])
    with pytest.raises(CliError, match=r"refused the write key \(401 unknown key\) — pass a valid"):
        await client.send([DOC], batch=True)
    assert slept == []


async def test_an_unreachable_ingest_is_one_line() -> None:
    client, _ = client_for([httpx.ConnectError("Connection refused")])
    with pytest.raises(CliError) as caught:
        await client.send([DOC], batch=True)
    assert str(caught.value).startswith("cannot reach the ingest at http://ingest.test — ")
    assert "\n" not in str(caught.value)


async def test_a_dropped_connection_mid_run_is_retried_and_then_given_up() -> None:
    accepted = httpx.Response(202, json={"accepted": 1, "events": [], "rejected": []})
    client, slept = client_for([accepted, httpx.ReadError("reset"), accepted])
    await client.send([DOC], batch=True)
    assert (await client.send([DOC], batch=True)).retries == 1
    assert len(slept) == 1
    client, _ = client_for([accepted, *[httpx.Response(500)] * 4])
    await client.send([DOC], batch=True)
    with pytest.raises(CliError, match="kept answering 500"):
        await client.send([DOC], batch=True)


async def test_post_all_keeps_each_customers_order_and_the_due_times() -> None:
    seen: list[tuple[float, str]] = []
    began = time.monotonic()

    def handle(request: httpx.Request) -> httpx.Response:
        events = orjson.loads(request.content)["events"]
        seen.extend((time.monotonic() - began, e["event_id"]) for e in events)
        return httpx.Response(202, json={"accepted": len(events), "rejected": []})

    client = IngestClient(
        "http://ingest.test", "k", client=httpx.AsyncClient(transport=httpx.MockTransport(handle))
    )
    docs = [
        {"event_id": f"{c}-{n}", "type": "signup", "customer_id": c}
        for n in range(5)
        for c in ("a", "b", "c")
    ]
    due = [began + (0.3 if i >= 12 else 0.0) for i in range(len(docs))]
    progress = Progress(0.0, stream=io.StringIO())
    got = await post_all(docs, client, Plan(batch=4, workers=3), progress, due=due.__getitem__)
    assert got == (15, 0)
    for c in ("a", "b", "c"):
        assert [i for _, i in seen if i.startswith(c)] == [f"{c}-{n}" for n in range(5)]
    assert all(at >= 0.3 for at, i in seen if i.endswith("-4"))
