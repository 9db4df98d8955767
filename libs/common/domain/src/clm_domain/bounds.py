"""The bounds of what CLM Stream accepts, shared by the ingest (which refuses the rest with a
422 naming the field) and the engine's decoder (which sets the rest aside as poison): every
value inside them can be stored in Postgres and computed with, without overflow.

- **Timestamps**: ``TIME_MIN`` (1970-01-01T00:00:00Z) <= t < ``TIME_END`` (9900-01-01T00:00:00Z),
  offsets within ±14:00, normalised to UTC. Postgres refuses offsets past ±15:59; the engine
  adds rule intervals (<= ``MAX_RULE_DAYS``) to event times, metrics round up to the next
  minute, hour or day and read 2 days ahead: a century of margin keeps all of it inside
  Python's year 9999, and nothing is dated before the all-time KPI row (1970-01-01).
- **Money, one event**: 0 <= amount <= ``MONEY_MAX`` (10**14 - 0.0001: 18 digits, 4 places).
- **Money, sums**: customers' revenue and refunds, KPI bucket values: ``numeric(1000,4)``
  (migration 0011), added in :data:`SUM_CONTEXT`. More than 10**980 events of the largest
  amount before a sum could overflow: never.
- **JSON depth**: ``MAX_JSON_DEPTH`` (32) levels, the event object being level 1 (the engine's
  JSON decoder stops at 200, the wire serializer at 255).
- **Ids**: 1..200 characters, no control characters (NUL included), no ``/``, not ``.`` or
  ``..``: Postgres ``text`` cannot hold a NUL, and every id is one path segment of
  ``/v1/customers/{id}``. **Labels**: the same without the path rules.

Pure: no I/O; the checks raise ``ValueError`` (pydantic names the field).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal
from itertools import accumulate
from typing import Any

# --- time ---------------------------------------------------------------------------------

TIME_MIN = datetime(1970, 1, 1, tzinfo=UTC)
TIME_END = datetime(9900, 1, 1, tzinfo=UTC)  # exclusive
MAX_OFFSET = timedelta(hours=14)  # the widest offset in use (Kiribati, UTC+14)
#: The longest interval a lifecycle rule may name (``*_days``): what the engine and the sweeper
#: add to (or take from) event times. TIME_END plus this is still far inside year 9999.
MAX_RULE_DAYS = 3660

_ZERO = timedelta(0)


def utc_time(value: datetime) -> datetime:
    """``value`` as the same instant in ``datetime.UTC``, or ValueError naming the bound it
    breaks: an offset beyond ±14:00, or an instant outside ``[TIME_MIN, TIME_END)``.

    The offset and the calendar year are checked before the conversion, so no value can make
    it overflow (``0001-01-01T00:00:00+14:00`` is year 0 in UTC). On the engine's hot path
    (every event decoded): a zero offset costs a constructor, not ``astimezone``."""
    if value.tzinfo is not UTC:
        offset = value.utcoffset()
        if offset == _ZERO:
            value = datetime(
                value.year,
                value.month,
                value.day,
                value.hour,
                value.minute,
                value.second,
                value.microsecond,
                UTC,
            )
        elif offset is None:
            raise ValueError("needs a UTC offset")
        elif abs(offset) > MAX_OFFSET:
            raise ValueError("UTC offset must be within ±14:00")
        elif not TIME_MIN.year - 1 <= value.year <= TIME_END.year:
            raise ValueError(_range_message())
        else:
            value = value.astimezone(UTC)
    if TIME_MIN <= value < TIME_END:
        return value
    raise ValueError(_range_message())


def _range_message() -> str:
    return f"must be from {TIME_MIN.isoformat()} and before {TIME_END.isoformat()}"


# --- money --------------------------------------------------------------------------------

MONEY_DIGITS = 18  # of which MONEY_PLACES after the point
MONEY_PLACES = 4
MONEY_MAX = Decimal(10 ** (MONEY_DIGITS - MONEY_PLACES)) - Decimal(1).scaleb(-MONEY_PLACES)
#: Digits of the sum columns (customers' revenue and refunds, KPI bucket values): Postgres'
#: widest declared numeric. Sums are exact up to here; each addend is at most MONEY_MAX.
SUM_DIGITS = 1000
#: Money sums are added in this context: exact to SUM_DIGITS significant digits (Python's
#: default context keeps 28 and would round a sum past 10**24).
SUM_CONTEXT = Context(prec=SUM_DIGITS)


def add_money(total: Decimal, amount: Decimal) -> Decimal:
    """``total + amount``, exactly (see :data:`SUM_CONTEXT`)."""
    return SUM_CONTEXT.add(total, amount)


# --- text ---------------------------------------------------------------------------------

#: Labels (source, channel, campaign …): no control characters (C0, DEL, C1).
TEXT_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
#: Ids (customer, anonymous, event, order …): a label that is also one URL path segment.
ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f/]+$"
#: What ids and labels had to match before these bounds (no C0 control character, so no NUL):
#: events stored then are still read back (see STORED).
STORED_TEXT_PATTERN = r"^[^\x00-\x1f]+$"
#: Ids that a URL client would resolve as a path step instead of sending.
DOT_SEGMENTS = frozenset({".", ".."})
MAX_ID_LENGTH = 200
MAX_LABEL_LENGTH = 200

# fullmatch, not the patterns' ^…$: Python's $ also matches before a final newline
_ID = re.compile(ID_PATTERN[1:-1])
_TEXT = re.compile(TEXT_PATTERN[1:-1])
_ID_SEGMENT = re.compile(r"(?!\.\.?\Z)" + ID_PATTERN[1:-1])


def is_id(value: str) -> bool:
    """Whether ``value`` is an id (see :func:`check_id`), in one regex call."""
    return _ID_SEGMENT.fullmatch(value) is not None


def is_label(value: str) -> bool:
    """Whether ``value`` is a label (see :func:`check_label`)."""
    return _TEXT.fullmatch(value) is not None


def check_id(value: str) -> str:
    """An id: no control characters, one URL path segment as it is (no ``/``, not ``.`` or
    ``..``)."""
    if _ID.fullmatch(value) is None:
        raise ValueError("must have no '/' and no control characters")
    if value in DOT_SEGMENTS:
        raise ValueError("cannot be . or ..")
    return value


def check_label(value: str) -> str:
    """A label: no control characters."""
    if _TEXT.fullmatch(value) is None:
        raise ValueError("must have no control characters")
    return value


#: The validation context key of events read back from the engine's own store: accepted
#: under the rules of their time, so only what Postgres and Python cannot hold is refused
#: (NUL, an offset or instant beyond the calendar); the bounds above apply to new events.
STORED = "stored"


def as_utc(value: datetime) -> datetime:
    """``value`` in ``datetime.UTC``, without the bounds (events stored before them)."""
    return value if value.tzinfo is UTC else value.astimezone(UTC)


# --- JSON ---------------------------------------------------------------------------------

MAX_JSON_DEPTH = 32  # an event object is level 1, its properties level 2, …


def too_deep(value: Any, depth: int, limit: int = MAX_JSON_DEPTH) -> str | None:
    """The path (``.a[0].b``) of the first container in ``value`` (itself at level
    ``depth``) that lies deeper than ``limit`` levels; None if there is none.

    Walks containers only (scalars cost an isinstance), without recursion, stopping at the
    first one too deep: a hostile document costs one pass at most."""
    if not isinstance(value, dict | list):
        return None
    if depth > limit:
        return ""
    for child in value.values() if isinstance(value, dict) else value:
        if isinstance(child, dict | list):
            break
    else:  # flat (the usual properties): nothing to walk
        return None
    stack: list[tuple[Any, int, str]] = [(value, depth, "")]
    while stack:
        node, level, path = stack.pop()
        if level > limit:
            return path
        if isinstance(node, dict):
            for key, child in node.items():
                if isinstance(child, dict | list):
                    stack.append((child, level + 1, f"{path}.{key}"))
        else:
            for index, child in enumerate(node):
                if isinstance(child, dict | list):
                    stack.append((child, level + 1, f"{path}[{index}]"))
    return None


_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS = bytes(range(256)).translate(None, b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def raw_depth(body: bytes) -> int:
    """How deep a JSON text nests (0 for a scalar), read without parsing it: for a body a
    parser refused, to tell "too deep" from "not JSON". Every pass runs in C (a regex, a
    translate, a running sum)."""
    brackets = _STRINGS.sub(b"", body).translate(None, _BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)
