"""The facts a segment condition can test, their kinds, and the operators each kind takes.

A fact's name is the :class:`~clm_domain.customer_state.CustomerState` field where one exists;
the others are derived from the state (``tickets_open``, ``net_revenue``,
``average_order_value``, ``review_average``) or come from the fitted model (the scores).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Kind(StrEnum):
    """What a fact holds, which decides the operators and values it takes."""

    STAGE = "stage"
    TEXT = "text"
    COUNT = "count"
    MONEY = "money"
    RATIO = "ratio"
    TIME = "time"
    SCORE = "score"


#: Every fact by name, with its kind.
FACTS: Final[dict[str, Kind]] = {
    "stage": Kind.STAGE,
    **dict.fromkeys(
        ("first_source", "first_channel", "first_campaign", "purchase_currency"), Kind.TEXT
    ),
    **dict.fromkeys(
        (
            "purchases",
            "refunds",
            "purchase_days",
            "tickets_opened",
            "tickets_solved",
            "tickets_open",
            "reviews",
            "referrals",
            "reactivations",
            "events",
            "last_nps",
        ),
        Kind.COUNT,
    ),
    **dict.fromkeys(
        ("revenue", "refunded", "net_revenue", "repeat_spend", "average_order_value"),
        Kind.MONEY,
    ),
    "review_average": Kind.RATIO,
    **dict.fromkeys(
        (
            "stage_entered_at",
            "first_seen_at",
            "last_seen_at",
            "acquired_at",
            "converted_at",
            "last_purchase_at",
        ),
        Kind.TIME,
    ),
    **dict.fromkeys(("p_alive", "expected_purchases_90d", "predicted_clv"), Kind.SCORE),
}

#: The facts that may be null (a predicate on a null fact is false, except ``exists``).
NULLABLE: Final = frozenset(
    {
        "first_channel",
        "first_campaign",
        "purchase_currency",
        "last_nps",
        "average_order_value",
        "review_average",
        "acquired_at",
        "converted_at",
        "last_purchase_at",
        "p_alive",
        "expected_purchases_90d",
        "predicted_clv",
    }
)

#: The facts ``days_since`` takes: the time facts.
TIME_FACTS: Final = tuple(name for name, kind in FACTS.items() if kind is Kind.TIME)
#: The score facts (from the fitted model, a function of the state and the UTC date).
SCORE_FACTS: Final = tuple(name for name, kind in FACTS.items() if kind is Kind.SCORE)

COMPARISONS: Final = ("eq", "ne", "lt", "le", "gt", "ge")
#: Every operator, in the order the reference lists them.
OPS: Final = (*COMPARISONS, "in", "between", "exists")
_EQUALITY: Final = ("eq", "ne", "in", "exists")
_ORDERED: Final = (*COMPARISONS, "in", "between", "exists")
_REAL: Final = ("lt", "le", "gt", "ge", "between", "exists")

#: The operators each kind takes. Real-valued facts (ratios, scores) take no equality: two
#: floats computed differently are rarely equal.
KIND_OPS: Final[dict[Kind, tuple[str, ...]]] = {
    Kind.STAGE: _EQUALITY,
    Kind.TEXT: _EQUALITY,
    Kind.COUNT: _ORDERED,
    Kind.MONEY: _ORDERED,
    Kind.RATIO: _REAL,
    Kind.TIME: (*COMPARISONS, "between", "exists"),
    Kind.SCORE: _REAL,
}
#: The operators ``days_since`` takes (its value: a whole number of days).
DAYS_SINCE_OPS: Final = _ORDERED

# --- bounds of a condition ------------------------------------------------------------------

MAX_DEPTH: Final = 8  # the root is at depth 1
MAX_NODES: Final = 200
MAX_ITEMS: Final = 50  # of an ``all`` or ``any``
MAX_IN_VALUES: Final = 500
MAX_STRING: Final = 200
MAX_COUNT: Final = 2**63 - 1  # counts compare with 0..MAX_COUNT (a Postgres bigint)
MAX_DAYS: Final = 36_600  # days_since compares with 0..MAX_DAYS (about a century)
