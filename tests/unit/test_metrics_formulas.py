"""Every KPI formula against a brute-force recomputation from the raw events (hypothesis).

Generated journeys are replayed with the stage reducer into the lifecycle records the stage
engine publishes; the records go through the metrics service's pure path (increments, the
minute/hour/day rollups, the range plan, the formulas), and every KPI of random windows and
filters must equal the brute force of ``tests/kpi_truth.py`` exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from clm_metrics import distinct
from clm_metrics.buckets import BucketKey, aggregate, increments, stay_bin, stay_bin_middle
from clm_metrics.formulas import WindowInputs, compute_kpis, lifecycle_map
from clm_metrics.inputs import level_at, stages_at
from clm_metrics.members import distinct_items, leaving
from clm_metrics.repository.rows import ANY, DistinctRow, distinct_rows, rollup
from clm_metrics.service import FUTURE
from clm_metrics.sums import MetricSums
from clm_metrics.tickets import LEVEL, TicketKey, TicketState, advance, ticket_event
from clm_metrics.windows import GRAINS, plan
from clm_simulator.journeys import CHANNELS, SOURCES, generate
from tests.kpi_truth import Step, record, replay, truth, truth_map

NOW = datetime(2026, 11, 23, 12, 34, 56, tzinfo=UTC)
Totals = dict[tuple[str, str, str, str], Decimal]


class Store:
    """The metrics tables in memory: minute buckets, rollups and distinct sets, as written
    (each record a batch of its own, through the write path's pure functions)."""

    def __init__(self, records: Iterable[Mapping[str, Any]]) -> None:
        docs = list(records)
        tickets: dict[TicketKey, TicketState] = {}
        levels: list[tuple[BucketKey, Decimal]] = []
        for r in docs:
            step = ticket_event(r) or leaving(r)
            if step is not None:
                changes = advance(tickets, [step])
                for name, state in changes.states.items():
                    if state is None:
                        tickets.pop(name, None)
                    else:
                        tickets[name] = state
                levels.extend(changes.increments)
        minute = aggregate([*(p for r in docs for p in increments(r)), *levels])
        self.grains: dict[str, dict[BucketKey, Decimal]] = {"minute": minute}
        for (grain, key), v in rollup(minute).items():
            self.grains.setdefault(grain, {})[key] = v
        self.numbers: dict[str, int] = {}
        self.sets: dict[DistinctRow, BitMap] = {}
        for r in docs:
            members = [
                (key, self.numbers.setdefault(who, len(self.numbers) * 7 + 3))
                for key, who in distinct_items(r)
            ]
            for row, counted in distinct_rows(members).items():
                bitmap = self.sets.setdefault(row, BitMap())
                if row[2] == "purchasers":
                    repeat_row = (row[0], row[1], "repeat_purchasers", row[3], row[4])
                    repeat = self.sets.setdefault(repeat_row, BitMap())
                    distinct.add_orders(bitmap, repeat, counted)
                else:
                    distinct.add_visitors(bitmap, counted)

    def _keep(self, k: BucketKey, source: str | None, channel: str | None) -> bool:
        return (source is None or k.source == source) and (channel is None or k.channel == channel)

    def range(
        self,
        start: datetime,
        end: datetime,
        source: str | None,
        channel: str | None,
        prefix: str = "",
    ) -> Totals:
        out: Totals = {}
        for seg in plan(start, end):
            for k, v in self.grains[seg.grain].items():
                if (
                    seg.start <= k.bucket_start < seg.end
                    and self._keep(k, source, channel)
                    and k.metric.startswith(prefix)
                ):
                    key = (k.metric, k.source, k.channel, k.currency)
                    out[key] = out.get(key, Decimal(0)) + v
        return out

    def all_time(self, source: str | None, channel: str | None) -> Totals:
        out: Totals = {}
        for k, v in self.grains["all"].items():
            if self._keep(k, source, channel):
                key = (k.metric, k.source, k.channel, k.currency)
                out[key] = out.get(key, Decimal(0)) + v
        return out

    def distinct(
        self, start: datetime, end: datetime, source: str | None, channel: str | None
    ) -> dict[str, int]:
        """The window's distinct counts as the reader makes them: the rows of the planned
        segments (their grain, merged over every source or channel unless filtered), folded."""
        src, ch = ANY if source is None else source, ANY if channel is None else channel
        rows = [
            ((g, b), m, bitmap)
            for seg in plan(start, end)
            for (g, b, m, s, c), bitmap in self.sets.items()
            if g == seg.grain and seg.start <= b < seg.end and (s, c) == (src, ch)
        ]
        return distinct.from_buckets(rows).counts()

    def inputs(
        self, start: datetime, end: datetime, source: str | None, channel: str | None
    ) -> WindowInputs:
        far = NOW.replace(hour=0, minute=0, second=0, microsecond=0) + FUTURE
        all_time = self.all_time(source, channel)
        return WindowInputs(
            totals=self.range(start, end, source, channel),
            stages_at_start=stages_at(all_time, self.range(start, far, source, channel, "flow:")),
            stages_at_end=stages_at(all_time, self.range(end, far, source, channel, "flow:")),
            open_tickets_at_end=level_at(
                all_time, self.range(end, far, source, channel, LEVEL), LEVEL
            ),
            all_time=all_time,
            distinct=self.distinct(start, end, source, channel),
        )


def journeys(seed: int, customers: int) -> list[Step]:
    docs = generate(seed, customers=customers, now=NOW, days=120)
    return replay(docs, now=NOW)


windows = st.tuples(
    st.integers(min_value=0, max_value=130 * 24 * 60),  # start: minutes before now
    st.integers(min_value=1, max_value=100 * 24 * 60),  # length in minutes
)
filters = st.tuples(st.none() | st.sampled_from(SOURCES), st.none() | st.sampled_from(CHANNELS))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(min_value=0, max_value=10_000),
    customers=st.integers(min_value=3, max_value=40),
    window=windows,
    flt=filters,
)
def test_every_kpi_equals_the_brute_force(
    seed: int, customers: int, window: tuple[int, int], flt: tuple[str | None, str | None]
) -> None:
    steps = journeys(seed, customers)
    store = Store(record(s) for s in steps)
    end_now = NOW.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end_now - timedelta(minutes=window[0])
    end = min(start + timedelta(minutes=window[1]), end_now + timedelta(days=1))
    source, channel = flt
    got = compute_kpis(store.inputs(start, end, source, channel), reporting_currency="USD")
    want = truth(steps, start, end, now=NOW, source=source, channel=channel)
    assert got == want
    lmap = lifecycle_map(store.inputs(start, end, source, channel))
    expected = truth_map(steps, start, end, source=source, channel=channel)
    assert lmap["transitions"] == expected["transitions"]
    assert lmap["median_seconds_in_stage"] == expected["median_seconds_in_stage"]


@settings(max_examples=30, deadline=None)
@given(
    start=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 1, 1)),
    minutes=st.integers(min_value=0, max_value=400 * 24 * 60),
)
def test_a_range_plan_covers_it_exactly_once_with_bounded_rows(
    start: datetime, minutes: int
) -> None:
    s = start.replace(second=0, microsecond=0, tzinfo=UTC)
    e = s + timedelta(minutes=minutes)
    segments = plan(s, e)
    cursor = s
    for seg in segments:
        assert seg.start == cursor
        assert seg.end > seg.start
        step = GRAINS[seg.grain]
        assert (seg.start - datetime(1970, 1, 1, tzinfo=UTC)) % step == timedelta(0)
        assert (seg.end - seg.start) % step == timedelta(0)
        cursor = seg.end
    assert cursor == e
    rows = sum(int((g.end - g.start) / GRAINS[g.grain]) for g in segments)
    assert rows <= 2 * 59 + 2 * 23 + minutes // (24 * 60) + 1


@given(st.integers(min_value=0, max_value=10**7))
def test_a_stay_bin_middle_is_within_its_bin(seconds: int) -> None:
    d = timedelta(seconds=seconds)
    b = stay_bin(d)
    if 0 < b < 79:
        assert stay_bin(stay_bin_middle(b)) == b
        assert abs(stay_bin_middle(b) - d) <= d * 0.25


def test_a_zero_denominator_is_null_not_zero() -> None:
    empty = WindowInputs(totals={}, stages_at_start={}, stages_at_end={}, all_time={})
    kpis = compute_kpis(empty, reporting_currency="USD")
    for name in (
        "lead_conversion_rate",
        "cac",
        "conversion_rate_visitors",
        "conversion_rate_leads",
        "average_order_value",
        "purchase_frequency",
        "refund_rate",
        "repeat_purchase_rate",
        "churn_rate",
        "retention_rate",
        "csat",
        "nps",
        "average_rating",
        "clv_historical",
        "clv_predicted",
        "expected_purchases_90d",
    ):
        assert kpis[name] is None, name
    assert kpis["revenue"] == "0.00"
    assert kpis["purchases"] == 0


_KEYS = st.tuples(
    st.sampled_from(["orders", "revenue", "spend", "flow::reach", "flow:reach:acquisition"]),
    st.sampled_from(["shop", "ads"]),
    st.sampled_from(["email", "social"]),
    st.sampled_from(["", "USD", "EUR"]),
)
_TOTALS = st.dictionaries(_KEYS, st.integers(-5, 50).map(Decimal), max_size=12)


@given(_TOTALS, _TOTALS)
def test_metric_sums_plus_equals_the_sums_of_both_and_leaves_the_first_alone(
    first: dict[Any, Decimal], second: dict[Any, Decimal]
) -> None:
    """The cached closed part's index plus the open part's keys answers like an index of the
    merged totals (what ``compute_kpis`` reads), and the cached index does not change."""
    merged = dict(first)
    for k, v in second.items():
        merged[k] = merged.get(k, Decimal(0)) + v
    cached = MetricSums(first)
    combined, fresh = cached.plus(second), MetricSums(merged)
    for sums, want in ((combined, fresh), (cached, MetricSums(first))):
        for metric in ("orders", "revenue", "spend", "flow::reach", "none"):
            for currency in (None, "", "USD"):
                assert sums(metric, currency) == want(metric, currency)
                for by in ("source", "channel"):
                    assert sums.grouped(metric, by, currency) == want.grouped(metric, by, currency)
        assert sums.prefixed("flow:") == want.prefixed("flow:")
    flows_in = {
        k: sum((v for key, v in combined.entries("flow:") if key == k), Decimal(0))
        for k, _ in combined.entries("flow:")
    }
    assert flows_in == {k: v for k, v in merged.items() if k[0].startswith("flow:")}
