"""A window's KPI inputs put together from the sums and distinct sets read (pure).

Stage counts and levels at an instant are the all-time totals minus what lies after it; a
rolling window is its closed part (cached while nothing in it changes) plus its open part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clm_domain.lifecycle import Stage
from clm_metrics.distinct import Distinct, combine
from clm_metrics.formulas import WindowInputs, stage_net
from clm_metrics.sums import ZERO, MetricSums, Totals, added, is_all_time_metric, is_level_metric
from clm_metrics.tickets import LEVEL


def stages_at(all_time: Totals, since: Totals) -> dict[str, int]:
    """Customers per stage at an instant: all-time net flows minus the flows after it."""
    now, after = stage_net(all_time), stage_net(since)
    return {s.value: now.get(s.value, 0) - after.get(s.value, 0) for s in Stage}


def level_at(all_time: Totals, since: Totals, metric: str) -> int:
    """A level metric (+1 / -1 changes) at an instant: all-time sum minus the sum after it."""
    before = sum((v for k, v in all_time.items() if k[0] == metric), ZERO)
    return int(before - sum((v for k, v in since.items() if k[0] == metric), ZERO))


def assemble(
    totals: Totals,
    since_end: Totals,
    all_time: Totals,
    sets: Distinct,
    metrics: Sequence[str],
    sums: MetricSums | None = None,
) -> WindowInputs:
    """The window's inputs from its sums, the level metrics' sums from its end on, the all-time
    totals and the distinct sets (``metrics``: those counted)."""
    # [start, far) is the window plus [end, far): no second read of the window's rows
    since_start = dict(since_end)
    window_flows = (
        sums.entries("flow:")
        if sums is not None
        else [(k, v) for k, v in totals.items() if k[0].startswith("flow:")]
    )
    for key, value in window_flows:
        since_start[key] = since_start.get(key, ZERO) + value
    return WindowInputs(
        totals=totals,
        stages_at_start=stages_at(all_time, since_start),
        stages_at_end=stages_at(all_time, since_end),
        open_tickets_at_end=level_at(all_time, since_end, LEVEL),
        all_time=all_time,
        distinct={m: n for m, n in sets.counts().items() if m in metrics},
        sums=sums,
        purchasers=sets.purchasers if "purchasers" in metrics else None,
    )


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """A rolling window's part before the current hour: its sums and distinct sets, and the
    all-time totals before that hour."""

    totals: Totals
    sets: Distinct
    all_time: Totals
    sums: MetricSums  # ``totals`` indexed


def closed_window(
    sums: Sequence[Totals], sets: Sequence[Distinct], all_time: Totals, since: Totals
) -> ClosedWindow:
    """The closed segments' sums and sets merged; the all-time totals minus those ``since``
    the current hour."""
    before = dict(all_time)
    for key, value in since.items():
        before[key] = before.get(key, ZERO) - value
    totals = added(sums)
    return ClosedWindow(totals, combine(sets), before, MetricSums(totals))


def rolling(
    part: ClosedWindow, sums: Totals, later: Totals, sets: Distinct, metrics: Sequence[str]
) -> WindowInputs:
    """A rolling window's inputs: its closed ``part`` plus the open part's ``sums`` and
    ``sets``, with ``later`` the all-time metrics' sums after the window."""
    open_all_time = {k: v for k, v in added([sums, later]).items() if is_all_time_metric(k[0])}
    return assemble(
        added([part.totals, sums]),
        {k: v for k, v in later.items() if is_level_metric(k[0])},
        added([part.all_time, open_all_time]),
        combine([part.sets, sets]),
        metrics,
        part.sums.plus(sums),
    )
