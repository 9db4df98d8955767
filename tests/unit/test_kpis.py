"""KPI math and bucket increments, checked against a brute-force count of the raw records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clm_domain.kpis import exact_money, money, parse_window, ratio, window_bounds
from clm_metrics.buckets import aggregate, increments, stage_deltas
from clm_metrics.cohorts import cohort_rows
from clm_metrics.formulas import WindowInputs
from clm_metrics.formulas import compute_kpis as compute
from clm_metrics.members import distinct_items

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def record(
    type_: str,
    *,
    minute: int = 0,
    amount: str = "10.00",
    currency: str = "USD",
    first: bool = False,
    repeat: bool = False,
    before: str | None = None,
    after: str | None = "reach",
) -> dict[str, Any]:
    props: dict[str, Any] = {}
    if type_ in {"purchase", "refund"}:
        props = {"order_id": "o", "amount": amount, "currency": currency}
    return {
        "record_id": f"r{minute}{type_}{amount}",
        "event": {
            "type": type_,
            "source": "shop",
            "channel": "email",
            "occurred_at": (T0 + timedelta(minutes=minute, seconds=17)).isoformat(),
            "properties": props,
        },
        "first_purchase": first,
        "repeat_purchase": repeat,
        "reactivation": False,
        "stage_before": before,
        "stage_after": after,
    }


def totals_of(records: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], Decimal]:
    out: dict[tuple[str, str, str, str], Decimal] = {}
    for key, value in aggregate(p for r in records for p in increments(r)).items():
        k = (key.metric, key.source, key.channel, key.currency)
        out[k] = out.get(k, Decimal(0)) + value
    return out


def compute_kpis(
    totals: dict[tuple[str, str, str, str], Decimal], *, reporting_currency: str
) -> dict[str, Any]:
    inputs = WindowInputs(totals=totals, stages_at_start={}, stages_at_end={}, all_time={})
    return compute(inputs, reporting_currency=reporting_currency)


def test_revenue_orders_and_average_order_value() -> None:
    records = [
        record("purchase", amount="10.00", first=True),
        record("purchase", minute=1, amount="25.50", repeat=True),
        record("purchase", minute=2, amount="99.00", currency="EUR"),
        record("site_visit", minute=3),
    ]
    kpis = compute_kpis(totals_of(records), reporting_currency="USD")
    assert kpis["purchases"] == 3
    assert kpis["revenue"] == "35.50"
    assert kpis["revenue_by_currency"] == {"EUR": "99.00", "USD": "35.50"}
    assert kpis["average_order_value"] == "17.75"
    assert kpis["new_customers"] == 1
    assert kpis["repeat_purchases"] == 1
    assert kpis["site_visits"] == 1
    assert kpis["events"] == 4


def test_ratios_with_a_zero_denominator_are_null_not_zero() -> None:
    kpis = compute_kpis({}, reporting_currency="USD")
    assert kpis["average_order_value"] is None
    assert kpis["revenue"] == "0.00"
    assert ratio(Decimal(1), Decimal(0)) is None
    assert money(None) is None


@pytest.mark.parametrize(
    ("value", "text"),
    [("59.9000", "59.90"), ("0", "0.00"), ("12.3456", "12.3456"), ("1E+3", "1000.00")],
)
def test_exact_money_keeps_every_digit_and_at_least_cents(value: str, text: str) -> None:
    assert exact_money(Decimal(value)) == text


def test_buckets_are_per_minute_of_event_time() -> None:
    (key, value), *_ = increments(record("site_visit", minute=7))
    assert key.bucket_start == T0 + timedelta(minutes=7)
    assert value == 1


def test_stage_deltas_move_customers_between_stages() -> None:
    deltas = stage_deltas(
        [
            record("site_visit", before=None, after="reach"),
            record("purchase", before="reach", after="conversion"),
            record("site_visit", before="conversion", after="conversion"),
        ]
    )
    assert deltas == {"conversion": 1}


@pytest.mark.parametrize(
    ("text", "span"),
    [("1h", timedelta(hours=1)), ("7d", timedelta(days=7)), ("90m", timedelta(minutes=90))],
)
def test_windows(text: str, span: timedelta) -> None:
    assert parse_window(text) == span


@pytest.mark.parametrize("text", ["", "7w", "0d", "-1h", "1000d", "24 h"])
def test_bad_windows(text: str) -> None:
    with pytest.raises(ValueError, match="window"):
        parse_window(text)


def test_window_bounds_cover_whole_minutes_including_the_current_one() -> None:
    now = T0 + timedelta(minutes=5, seconds=30)
    start, end = window_bounds(now, timedelta(hours=1))
    assert start == T0 - timedelta(minutes=55)
    assert end == T0 + timedelta(minutes=6)


amounts = st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False)


@given(st.lists(st.tuples(amounts, st.sampled_from(["USD", "EUR"]), st.integers(0, 600))))
def test_bucket_sums_equal_a_brute_force_recount(
    purchases: list[tuple[Decimal, str, int]],
) -> None:
    records = [
        record("purchase", minute=m, amount=str(a), currency=c, first=(i == 0))
        for i, (a, c, m) in enumerate(purchases)
    ]
    kpis = compute_kpis(totals_of(records), reporting_currency="USD")
    usd = [a for a, c, _ in purchases if c == "USD"]
    assert kpis["purchases"] == len(purchases)
    assert kpis["revenue"] == money(sum(usd, Decimal(0)))
    expected_aov = money(sum(usd, Decimal(0)) / len(usd)) if usd else None
    assert kpis["average_order_value"] == expected_aov


def test_a_correction_takes_back_the_old_flags_by_their_attribution_and_adds_the_new() -> None:
    """A purchase counted as a new customer (first touch: ads) becomes a repeat purchase of a
    customer whose first touch is now email: new_customers -1 under ads, repeat +1 under email;
    no order, revenue or move is counted again, nor anyone's distinct sets (repeat purchasers
    are customers with two orders in a window, whatever came before)."""
    purchase = record("purchase", first=True)
    purchase["customer"] = {"customer_id": "c1", "first_source": "ads", "first_channel": "paid"}
    correction = {
        "kind": "correction",
        "record_id": "correction:shop:p2@shop:p1",
        "customer_id": "c1",
        "event": None,
        "customer": {"customer_id": "c1", "first_source": "shop", "first_channel": "email"},
        "stage_before": None,
        "stage_after": None,
        "first_purchase": False,
        "repeat_purchase": True,
        "reactivation": False,
        "corrected": {
            "event": purchase["event"],
            "customer": purchase["customer"],
            "first_purchase": True,
            "repeat_purchase": False,
            "reactivation": False,
        },
    }
    assert totals_of([correction]) == {
        ("new_customers", "ads", "paid", ""): Decimal(-1),
        ("repeat_purchases", "shop", "email", ""): Decimal(1),
    }
    both = totals_of([purchase, correction])
    assert both[("new_customers", "ads", "paid", "")] == 0
    assert both[("orders", "shop", "email", "USD")] == 1
    assert stage_deltas([correction]) == {}
    assert distinct_items(correction) == []
    assert [(k.metric, who) for k, who in distinct_items(purchase)] == [("purchasers", "c1")]
    assert cohort_rows(correction) == []
