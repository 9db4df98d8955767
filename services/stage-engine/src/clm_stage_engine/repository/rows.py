"""A customer row and a transition as the stage engine stores them: columns, values, state."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from clm_domain.lifecycle import CustomerState, Stage, Transition
from clm_infra.db import pg_array

#: A customer row's state columns: CustomerState's fields, in their order.
STATE_COLUMNS = [f.name for f in fields(CustomerState)]
_state_values = operator.attrgetter(*STATE_COLUMNS)
_STAGE = STATE_COLUMNS.index("stage")
_TUPLES = (STATE_COLUMNS.index("recent_visits"), STATE_COLUMNS.index("recent_purchases"))


def state_from_row(row: Any) -> CustomerState:
    """The state from a row with (at least) the state columns, by name."""
    return state_from_values([getattr(row, name) for name in STATE_COLUMNS])


#: Stages by value: a dict look-up, cheaper than Stage(value) on the hot path.
_STAGES = {stage.value: stage for stage in Stage}


def state_from_values(values: Sequence[Any]) -> CustomerState:
    """The state from a row of exactly ``STATE_COLUMNS``, by position (the hot path)."""
    v = list(values)
    v[_STAGE] = _STAGES[v[_STAGE]]
    for i in _TUPLES:
        v[i] = tuple(v[i] or ())
    return CustomerState(*v)


def row_from_state(state: CustomerState) -> dict[str, Any]:
    row = {name: getattr(state, name) for name in STATE_COLUMNS}
    row["stage"] = state.stage.value
    row["recent_visits"] = list(state.recent_visits)
    row["recent_purchases"] = list(state.recent_purchases)
    return row


def customer_rows(states: Sequence[CustomerState]) -> list[Any]:
    """The states as rows of ``STATE_COLUMNS``, in customer order (locks in a stable order)."""
    return [customer_row(s) for s in sorted(states, key=lambda s: s.customer_id)]


_MONEY = tuple(STATE_COLUMNS.index(name) for name in ("revenue", "refunded", "repeat_spend"))


def customer_row(state: CustomerState) -> list[Any]:
    """A state's values as a JSON row of ``STATE_COLUMNS``: arrays as literals, money as
    exact decimal strings (here, not in a ``default`` hook orjson would call back for)."""
    values = list(_state_values(state))
    for i in _TUPLES:
        values[i] = pg_array(values[i])
    for i in _MONEY:
        values[i] = format(values[i], "f")
    return values


TRANSITION_COLUMNS = ("customer_id", "from_stage", "to_stage", "at", "event_id", "reason")


def transition_values(t: Transition) -> tuple[Any, ...]:
    return (t.customer_id, t.from_stage, t.to_stage, t.at, t.event_id, t.reason)
