"""The surviving-events truth (``clm_simulator.survivors``) on small hand-made histories:
identity merges, first link wins, explicit merges, erasures, repeats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from clm_domain.lifecycle import Stage
from clm_simulator.replay import final_states
from clm_simulator.survivors import Anonymise, Erase, Merge, replay_surviving, surviving
from clm_simulator.truth import truth

T0 = datetime(2026, 3, 2, tzinfo=UTC)
NOW = T0 + timedelta(days=3)


def ev(
    n: int,
    type_: str,
    *,
    cid: str | None = None,
    anon: str | None = None,
    channel: str = "email",
    **props: Any,
) -> dict[str, Any]:
    base: dict[str, dict[str, Any]] = {
        "site_visit": {"url": "https://shop.example/"},
        "signup": {},
        "identify": {},
        "purchase": {"order_id": f"o-{n}", "amount": "10.00", "currency": "USD"},
        "marketing_spend": {
            "channel": "email",
            "campaign": "c",
            "amount": "5.00",
            "currency": "USD",
            "period_start": T0.isoformat(),
            "period_end": (T0 + timedelta(days=1)).isoformat(),
        },
    }
    doc: dict[str, Any] = {
        "event_id": f"e{n}",
        "type": type_,
        "occurred_at": (T0 + timedelta(hours=n)).isoformat(),
        "source": "shop",
        "channel": channel,
        "properties": {**base[type_], **props},
    }
    if cid is not None:
        doc["customer_id"] = cid
    if anon is not None:
        doc["anonymous_id"] = anon
    return doc


def window(history: list[Any]) -> dict[str, Any]:
    steps = replay_surviving(history, now=NOW)
    return truth(steps, T0, NOW, now=NOW)


def test_an_anonymous_profile_folds_into_the_customer_that_identifies_it() -> None:
    history: list[Any] = [
        [ev(1, "site_visit", anon="a1", channel="paid_search")],
        [ev(2, "identify", cid="c1", anon="a1", channel="email")],
        [ev(3, "site_visit", anon="a1"), ev(4, "purchase", cid="c1")],
    ]
    steps = replay_surviving(history, now=NOW)
    (state,) = final_states(steps).values()
    assert state.customer_id == "c1"
    assert state.first_channel == "paid_search"  # the anonymous first touch counts
    kpis = window(history)
    assert kpis["unique_visitors"] == 1
    assert kpis["customers_by_stage"][Stage.CONVERSION.value] == 1
    assert sum(kpis["customers_by_stage"].values()) == 1


def test_without_the_fold_the_same_events_are_two_profiles() -> None:
    """The control: the plain replay keys events by their own ids."""
    from clm_simulator.replay import replay

    docs = [ev(1, "site_visit", anon="a1"), ev(2, "identify", cid="c1", anon="a1")]
    assert len(final_states(replay(docs, now=NOW))) == 2
    assert len(final_states(replay_surviving([docs], now=NOW))) == 1


def test_the_first_link_of_an_anonymous_id_wins() -> None:
    history: list[Any] = [
        [ev(2, "identify", cid="c1", anon="a1")],
        [ev(1, "identify", cid="c2", anon="a1"), ev(3, "site_visit", anon="a1")],
    ]
    found = surviving(history, now=NOW)
    assert found.owner("a1") == "c1"
    # within one batch, by event time
    batch = surviving(
        [[ev(5, "identify", cid="c2", anon="a2"), ev(4, "signup", cid="c3", anon="a2")]], now=NOW
    )
    assert batch.owner("a2") == "c3"


def test_an_explicit_merge_folds_every_event_of_from_into_the_survivor() -> None:
    history: list[Any] = [
        [ev(1, "signup", cid="c2", channel="paid_search"), ev(3, "purchase", cid="c1")],
        Merge(into="c1", source="c2"),
        [ev(4, "purchase", cid="c2")],
    ]
    steps = replay_surviving(history, now=NOW)
    (state,) = final_states(steps).values()
    assert (state.customer_id, state.purchases, state.first_channel) == ("c1", 2, "paid_search")
    kpis = window(history)
    assert (kpis["new_customers"], kpis["repeat_purchases"], kpis["purchasing_customers"]) == (
        1,
        1,
        1,
    )


def test_an_erasure_takes_back_the_customer_and_its_linked_ids_but_not_others() -> None:
    history: list[Any] = [
        [
            ev(1, "site_visit", anon="a1"),
            ev(2, "identify", cid="c1", anon="a1"),
            ev(3, "site_visit", anon="a9"),
            ev(4, "marketing_spend"),
            ev(5, "purchase", cid="c2"),
        ],
        Merge(into="c1", source="c2"),
        Erase("c1"),
        [ev(6, "purchase", cid="c1"), ev(7, "site_visit", anon="a1"), ev(8, "purchase", cid="c2")],
    ]
    found = surviving(history, now=NOW)
    assert [d["event_id"] for d in found.docs] == ["e3", "e4"]
    assert {"c1", "c2", "a1"} <= found.erased
    kpis = window(history)
    assert (kpis["purchases"], kpis["site_visits"], kpis["marketing_spend"]) == (0, 1, "5.00")
    assert sum(kpis["customers_by_stage"].values()) == 1  # a9 alone


def test_an_event_sent_twice_counts_once_even_in_another_batch() -> None:
    history: list[Any] = [[ev(1, "purchase", cid="c1"), ev(1, "purchase", cid="c1")]]
    history.append([ev(1, "purchase", cid="c1")])
    assert window(history)["purchases"] == 1


def test_an_anonymised_customer_keeps_its_events_under_its_pseudonym() -> None:
    history: list[Any] = [
        [ev(1, "site_visit", anon="a1"), ev(2, "identify", cid="c1", anon="a1")],
        [ev(3, "purchase", cid="c1")],
        Anonymise("c1", "anon-xyz"),
        [ev(4, "purchase", cid="c1"), ev(5, "site_visit", anon="a1"), ev(3, "purchase", cid="c1")],
    ]
    states = final_states(replay_surviving(history, now=NOW))
    assert sorted(states) == ["a1", "anon-xyz", "c1"]
    assert (states["anon-xyz"].purchases, states["c1"].purchases) == (1, 1)
    assert window(history)["purchases"] == 2  # the redelivered e3 counts once
