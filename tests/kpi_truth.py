"""Brute-force KPI truth for the tests: the KPIs come from :mod:`clm_simulator.truth`
(what ``clm simulate --truth`` writes); here the pieces that need the services' own code — the
lifecycle record the stage engine publishes for a step, the lifecycle map (stay histogram bins)
and retention cohorts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from clm_domain.lifecycle import Stage
from clm_domain.lifecycle_records import EventRecord, decode
from clm_metrics.buckets import stay_bin, stay_bin_middle
from clm_simulator.replay import Step, Sweep, replay
from clm_simulator.truth import truth
from clm_simulator.window import in_window, rate_str
from clm_stage_engine.records import lifecycle_record

__all__ = ["Step", "record", "replay", "truth", "truth_cohorts", "truth_map"]


def record(step: Step) -> EventRecord:
    """The lifecycle record the stage engine publishes for this step, as consumers decode it
    (:mod:`clm_domain.lifecycle_records`)."""
    doc = decode(lifecycle_record(step.event, step.before, step.applied))
    assert doc["kind"] == "event"
    return doc


def truth_map(
    steps: list[Step],
    start: datetime,
    end: datetime,
    *,
    source: str | None = None,
    channel: str | None = None,
    swept: list[Sweep] | tuple[()] = (),
) -> dict[str, Any]:
    """The lifecycle map of ``[start, end)`` from the steps and the sweeper's moves
    (``swept``, see :func:`~clm_simulator.replay.sweeps`; medians as histogram bins)."""
    moves: dict[tuple[str, str], int] = {}
    stays: dict[str, list[timedelta]] = {}
    runs = [
        (s.applied.state, s.before.stage_entered_at if s.before else None, s.applied.transitions)
        for s in steps
        if s.applied is not None
    ]
    runs += [(w.after, w.before.stage_entered_at, w.moves) for w in swept]
    for st, entered, transitions in runs:
        if (source is not None and st.first_source != source) or (
            channel is not None and (st.first_channel or "") != channel
        ):
            continue
        # each move at its own time; a stay runs from entering a stage to the next move
        for t in transitions:
            if in_window(t.at, start, end):
                key = (t.from_stage.value if t.from_stage else "", t.to_stage.value)
                moves[key] = moves.get(key, 0) + 1
                if t.from_stage is not None and entered is not None:
                    stays.setdefault(t.from_stage.value, []).append(t.at - entered)
            entered = t.at
    medians: dict[str, int | None] = {}
    for stage in Stage:
        durations = sorted(stays.get(stage.value, []))
        if not durations:
            medians[stage.value] = None
        else:
            lower = durations[(len(durations) + 1) // 2 - 1]
            medians[stage.value] = round(stay_bin_middle(stay_bin(lower)).total_seconds())
    return {
        "transitions": [
            {"from": a or None, "to": b, "customers": n} for (a, b), n in sorted(moves.items())
        ],
        "median_seconds_in_stage": medians,
    }


def truth_cohorts(steps: list[Step], period: str) -> list[dict[str, Any]]:
    """Cohorts by the period of the first purchase: distinct purchasers per period since."""
    from clm_metrics.cohorts import period_start, periods_between

    active: dict[Any, set[tuple[int, str]]] = {}
    for s in steps:
        if s.event.type != "purchase" or s.applied is None or s.applied.state.converted_at is None:
            continue
        cohort = period_start(period, s.applied.state.converted_at)
        since = periods_between(period, cohort, period_start(period, s.at))
        active.setdefault(cohort, set()).add((since, s.applied.state.customer_id))
    out = []
    for cohort in sorted(active):
        counts: dict[int, int] = {}
        for since, _ in active[cohort]:
            counts[since] = counts.get(since, 0) + 1
        size = counts.get(0, 0)
        out.append(
            {
                "cohort": cohort.isoformat(),
                "customers": size,
                "periods": [
                    {
                        "periods_since": n,
                        "purchasing_customers": v,
                        "share": rate_str(v, size),
                    }
                    for n, v in sorted(counts.items())
                ],
            }
        )
    return out
