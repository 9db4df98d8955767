"""The lifecycle model: stages and the pure stage reducer, driven by :mod:`clm_domain.rules`.

Pure and synchronous: no I/O, no clock (time comes from events, or is passed in as ``until``).
Its parts live in :mod:`clm_domain.stages` (the stages and their names),
:mod:`clm_domain.customer_state` (the state, the moves, what applying an event gave) and
:mod:`clm_domain.reducer` (the reducer); this module gathers them.

* :func:`advance` applies the time-based moves (``at_risk``, ``churned``) a customer went
  through between its last activity and a given time.
* :func:`apply_event` advances to the event's time, then applies the event's facts and rules.
* :func:`rebuild` folds a customer's whole event set in event-time order: the state is a
  function of the SET of events (and of ``until``), whatever order they arrived in. The stage
  engine folds in-order arrivals incrementally and rebuilds when a late event comes; both give
  the same answer (property-tested).

Stages move forward along the arc; the only backward moves are the defined ones: inactivity
(→ ``at_risk`` → ``churned``), an explicit cancellation (→ ``churned``), a full refund of the
only order (→ ``acquisition``), and a correction when a late event rewrites the past.
"""

from __future__ import annotations

from clm_domain.customer_state import (
    MIXED_CURRENCY,
    Applied,
    CustomerState,
    Transition,
    customer_key,
    event_order,
)
from clm_domain.reducer import advance, apply_event, is_late, rebuild
from clm_domain.stages import (
    ARC,
    CAN_LAPSE,
    CUSTOMER_STAGES,
    LAPSED,
    STAGE_ALIASES,
    STAGE_NAMES,
    VOCABULARIES,
    Stage,
    parse_stage,
)

__all__ = [
    "ARC",
    "CAN_LAPSE",
    "CUSTOMER_STAGES",
    "LAPSED",
    "MIXED_CURRENCY",
    "STAGE_ALIASES",
    "STAGE_NAMES",
    "VOCABULARIES",
    "Applied",
    "CustomerState",
    "Stage",
    "Transition",
    "advance",
    "apply_event",
    "customer_key",
    "event_order",
    "is_late",
    "parse_stage",
    "rebuild",
]
