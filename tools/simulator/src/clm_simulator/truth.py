"""Brute-force truth of a journey set: expected stages and KPIs, recomputed from raw events.

Events are replayed customer by customer (by event time) with the pure stage reducer
(:mod:`.replay`); then each KPI of a window is counted straight from the replayed steps
(:mod:`.window`, one function per KPI family in :mod:`.kpi_acquisition` and
:mod:`.kpi_customers`). No buckets, no rollups, no SQL: the reference the metrics service is
compared with (tests), and what ``clm simulate --truth`` writes.

A truth is stated *as of* an instant: :func:`~.replay.sweeps` gives the inactivity moves a
sweeper running at that instant makes, and :func:`truth` counts them with the events' own moves.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from clm_domain.kpis import window_bounds
from clm_domain.lifecycle import Stage
from clm_domain.rules import LifecycleRules
from clm_simulator.kpi_acquisition import acquisition, traffic
from clm_simulator.kpi_customers import lifetime_value, retention, revenue, service
from clm_simulator.replay import (
    RULES,
    Step,
    Sweep,
    next_inactivity_move,
    replay,
    stages_as_of,
    sweeps,
)
from clm_simulator.window import Window


def truth(
    steps: list[Step],
    start: datetime,
    end: datetime,
    *,
    now: datetime,
    reporting_currency: str = "USD",
    source: str | None = None,
    channel: str | None = None,
    swept: list[Sweep] | tuple[()] = (),
) -> dict[str, Any]:
    """Every KPI of ``[start, end)`` recomputed from the steps and the sweeper's moves
    (``swept``, see :func:`~.replay.sweeps`), with exact distinct counts."""
    w = Window(steps, start, end, reporting_currency, source, channel, swept)
    return {
        **traffic(w),
        **acquisition(w),
        **revenue(w),
        **retention(w),
        **service(w),
        **lifetime_value(w),
        "customers_by_stage": w.stages_at_end,
    }


TRUTH_SCHEMA = "clm.simulate.truth.v1"
TRUTH_NOTE = (
    "Stages and KPIs as of `as_of`: every event applied by the stage reducer, then the "
    "inactivity moves a sweeper running at `as_of` makes. Until `valid_until` (null: never) no "
    "customer crosses another inactivity threshold, so once the stage engine has applied every "
    "event and its sweeper has run, a stage read at any time in [as_of, valid_until) equals "
    "`customers[id].stage`. Each KPI window is the `[from, to)` range of its `query`."
)


def truth_document(
    docs: list[dict[str, Any]],
    *,
    as_of: datetime,
    windows: dict[str, timedelta],
    rules: LifecycleRules = RULES,
    reporting_currency: str = "USD",
    personas: dict[str, str] | None = None,
    about: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The truth file of ``clm simulate --truth``: stages per customer and KPIs per window."""
    steps = replay(docs, now=as_of, rules=rules)
    swept = sweeps(steps, as_of, rules)
    stages = stages_as_of(steps, as_of, rules)
    valid_until = next_inactivity_move(steps, as_of, rules)
    kpis = {}
    for name, span in windows.items():
        start, end = window_bounds(as_of, span)
        kpis[name] = {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "query": f"/v1/kpis?from={_q(start)}&to={_q(end)}",
            "kpis": truth(
                steps, start, end, now=as_of, reporting_currency=reporting_currency, swept=swept
            ),
        }
    return {
        "schema": TRUTH_SCHEMA,
        "note": TRUTH_NOTE,
        "as_of": as_of.isoformat(),
        "valid_until": None if valid_until is None else valid_until.isoformat(),
        **(about or {}),
        "events": len(docs),
        "stage_counts": _stage_counts(stages),
        "customers": _customers(stages, personas or {}),
        "kpis": kpis,
    }


def _customers(stages: dict[str, Stage], personas: dict[str, str]) -> dict[str, dict[str, str]]:
    """Each customer's stage (and persona, when generated from one), by id."""
    customers: dict[str, dict[str, str]] = {}
    for key in sorted(stages):
        entry = {"stage": stages[key].value}
        if key in personas:
            entry["persona"] = personas[key]
        customers[key] = entry
    return customers


def _stage_counts(stages: dict[str, Stage]) -> dict[str, int]:
    counts = {s.value: 0 for s in Stage}
    for stage in stages.values():
        counts[stage.value] += 1
    return counts


def _q(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
