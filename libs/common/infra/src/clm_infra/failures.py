"""Why a batch failed: something retrying can fix (transient), or a record it never will.

A consumer loop retries a failed batch; that is right when Postgres is away, a concurrent
transaction won (serialization failure, deadlock, a lock), or a statement was cancelled. It is
wrong when a record carries a value Postgres refuses (SQLSTATE class 22, data exception:
a numeric field overflow, a time zone out of range), breaks a constraint (class 23), hits a
program limit (class 54), or makes the handler's own code raise a deterministic Python error
(a value, arithmetic, recursion or encoding error), or a cardinality violation (class 21: an
upsert touching one row twice): the same records fail the same way every
time, and the partition would wait behind them for good. Such a failure is *permanent*: the
loop bisects the batch to find the records that cause it (:mod:`clm_infra.consumer`).

Anything not known to be permanent is transient: an unknown failure is retried, as before,
so a new kind of outage never sends good records to the dead-letter topic.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import exc as sa_exc

from clm_infra.db import unavailable

#: SQLSTATE classes no retry fixes, and the label each is counted under
PERMANENT_CLASSES = {"21": "data", "22": "data", "23": "integrity", "54": "limit"}

#: Python errors a handler raises the same way for the same records
DETERMINISTIC: tuple[type[BaseException], ...] = (
    ValueError,  # UnicodeError, asyncpg's client-side DataError (a value it cannot encode)
    ArithmeticError,  # OverflowError, ZeroDivisionError, decimal.InvalidOperation
    RecursionError,
    TypeError,  # orjson's JSONEncodeError is TypeError: a value it cannot write
)

#: the metric labels a failure is counted under (bounded)
KINDS = ("transient", "data", "integrity", "limit", "python")


@dataclass(frozen=True, slots=True)
class Failure:
    """A batch's failure, classified. ``kind``: one of :data:`KINDS`; ``reason``: the
    exception's class, its SQLSTATE if any, and a short message (a DLQ record's reason)."""

    permanent: bool
    kind: str
    sqlstate: str | None
    reason: str


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: SQLAlchemy's ``orig`` (the adapted driver error) and
    explicit causes (``raise ... from``), never the implicit context."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        if isinstance(current, sa_exc.StatementError) and current.orig is not None:
            current = current.orig
        else:
            current = current.__cause__
    return chain


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a Postgres error, under SQLAlchemy's wrapping or not (None: none)."""
    for cause in _causes(exc):
        code = getattr(cause, "sqlstate", None)
        if isinstance(code, str) and len(code) == 5:
            return code
    return None


def _innermost(exc: BaseException) -> BaseException:
    return _causes(exc)[-1]


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def classify(exc: BaseException) -> Failure:
    """Whether ``exc`` (a batch's failure) is permanent for its records, and why."""
    inner = _innermost(exc)
    code = sqlstate(exc)
    name = type(inner).__name__
    reason = f"{name} {code}: {_short(inner)}" if code else f"{name}: {_short(inner)}"
    if unavailable(exc) or any(unavailable(c) for c in _causes(exc)):
        return Failure(False, "transient", code, reason)
    if code is not None:
        kind = PERMANENT_CLASSES.get(code[:2])
        if kind is None:  # 40001, 40P01, 55P03, 57014, 57P01, 53…: retry
            return Failure(False, "transient", code, reason)
        return Failure(True, kind, code, reason)
    if any(isinstance(c, DETERMINISTIC) for c in _causes(exc)):
        return Failure(True, "python", None, reason)
    return Failure(False, "transient", None, reason)
