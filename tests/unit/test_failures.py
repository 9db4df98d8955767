"""Which batch failures retrying cannot fix (bisect, dead-letter) and which it can (retry)."""

from __future__ import annotations

import decimal

import asyncpg
import orjson
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi

from clm_infra.failures import KINDS, classify, sqlstate

DBAPI = AsyncAdapt_asyncpg_dbapi(asyncpg)  # type: ignore[no-untyped-call]


def through_sqlalchemy(error: asyncpg.PostgresError) -> sa_exc.DBAPIError:
    """``error`` as SQLAlchemy raises it: the asyncpg error translated to the adapted DBAPI
    error (raised from the original), wrapped in a DBAPIError."""
    for cls in type(error).__mro__:
        if cls in DBAPI._asyncpg_error_translate:
            adapted = DBAPI._asyncpg_error_translate[cls](error.args[0], error)
            break
    else:
        raise AssertionError(f"no translation for {type(error).__name__}")
    adapted.__cause__ = error
    wrapped = sa_exc.DBAPIError.instance("UPDATE customers", {}, adapted, DBAPI.Error)
    assert isinstance(wrapped, sa_exc.DBAPIError)
    return wrapped


def pg(cls: type[asyncpg.PostgresError], message: str = "refused") -> asyncpg.PostgresError:
    return cls(message)


PERMANENT = [
    (asyncpg.exceptions.NumericValueOutOfRangeError, "22003", "data"),
    (asyncpg.exceptions.DatetimeFieldOverflowError, "22008", "data"),
    (asyncpg.exceptions.InvalidTimeZoneDisplacementValueError, "22009", "data"),
    (asyncpg.exceptions.InvalidTextRepresentationError, "22P02", "data"),
    (asyncpg.exceptions.CharacterNotInRepertoireError, "22021", "data"),
    (asyncpg.exceptions.UntranslatableCharacterError, "22P05", "data"),
    (asyncpg.exceptions.CheckViolationError, "23514", "integrity"),
    (asyncpg.exceptions.NotNullViolationError, "23502", "integrity"),
    (asyncpg.exceptions.ProgramLimitExceededError, "54000", "limit"),
    (asyncpg.exceptions.CardinalityViolationError, "21000", "data"),
    (asyncpg.exceptions.StatementTooComplexError, "54001", "limit"),
]

TRANSIENT = [
    (asyncpg.exceptions.SerializationError, "40001"),
    (asyncpg.exceptions.DeadlockDetectedError, "40P01"),
    (asyncpg.exceptions.LockNotAvailableError, "55P03"),
    (asyncpg.exceptions.QueryCanceledError, "57014"),
    (asyncpg.exceptions.AdminShutdownError, "57P01"),
    (asyncpg.exceptions.CannotConnectNowError, "57P03"),
    (asyncpg.exceptions.TooManyConnectionsError, "53300"),
    (asyncpg.exceptions.DiskFullError, "53100"),
    (asyncpg.exceptions.UndefinedTableError, "42P01"),  # a bug or a migration behind: retry
]


@pytest.mark.parametrize(("cls", "code", "kind"), PERMANENT)
@pytest.mark.parametrize("wrapped", [False, True], ids=["driver", "sqlalchemy"])
def test_data_integrity_and_limit_errors_are_permanent(
    cls: type[asyncpg.PostgresError], code: str, kind: str, wrapped: bool
) -> None:
    error = pg(cls, "numeric field overflow")
    failure = classify(through_sqlalchemy(error) if wrapped else error)
    assert failure.permanent
    assert (failure.kind, failure.sqlstate) == (kind, code)
    assert failure.reason == f"{cls.__name__} {code}: numeric field overflow"
    assert failure.kind in KINDS


@pytest.mark.parametrize(("cls", "code"), TRANSIENT)
@pytest.mark.parametrize("wrapped", [False, True], ids=["driver", "sqlalchemy"])
def test_contention_cancellation_and_shortage_are_transient(
    cls: type[asyncpg.PostgresError], code: str, wrapped: bool
) -> None:
    error = pg(cls)
    failure = classify(through_sqlalchemy(error) if wrapped else error)
    assert not failure.permanent
    assert (failure.kind, failure.sqlstate) == ("transient", code)


def test_sqlstate_is_found_under_an_explicit_cause_only() -> None:
    outer = RuntimeError("batch failed")
    outer.__cause__ = pg(asyncpg.exceptions.NumericValueOutOfRangeError)
    assert sqlstate(outer) == "22003"
    assert classify(outer).permanent
    implicit = RuntimeError("while handling another")
    implicit.__context__ = pg(asyncpg.exceptions.NumericValueOutOfRangeError)
    assert sqlstate(implicit) is None
    assert not classify(implicit).permanent  # unknown: retried


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError("reset by peer"),
        TimeoutError(),
        OSError(111, "Connection refused"),
        asyncpg.exceptions.ConnectionDoesNotExistError("closed in the middle"),
        sa_exc.TimeoutError("QueuePool limit reached"),
        RuntimeError("something new"),
        KeyError("a bug"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_outages_and_unknown_errors_are_retried(error: Exception) -> None:
    assert not classify(error).permanent


def test_a_lost_connection_under_a_data_error_class_is_still_transient() -> None:
    wrapped = through_sqlalchemy(pg(asyncpg.exceptions.NumericValueOutOfRangeError))
    wrapped.connection_invalidated = True
    assert not classify(wrapped).permanent


def _recursion() -> RecursionError:
    def deeper(n: int) -> int:
        return deeper(n + 1) + 1

    try:
        deeper(0)
    except RecursionError as exc:
        return exc
    raise AssertionError("no recursion error")


def _json_error() -> orjson.JSONEncodeError:
    value: object = "leaf"
    for _ in range(300):
        value = [value]
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        return exc
    raise AssertionError("orjson wrote 300 levels")


@pytest.mark.parametrize(
    "error",
    [
        ValueError("year 0 is out of range"),
        OverflowError("date value out of range"),
        decimal.InvalidOperation(),
        ZeroDivisionError(),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        _recursion(),
        _json_error(),
        TypeError("Type is not JSON serializable: set"),
        asyncpg.exceptions._base.DataError("invalid input for query argument $1"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_deterministic_python_errors_are_permanent(error: BaseException) -> None:
    failure = classify(error)
    assert failure.permanent
    assert failure.kind == "python"
    assert failure.reason.startswith(type(error).__name__)


def test_a_python_error_wrapped_by_sqlalchemy_is_permanent() -> None:
    inner = OverflowError("date value out of range")
    wrapped = sa_exc.StatementError("bind failed", "INSERT", {}, inner)
    failure = classify(wrapped)
    assert failure.permanent
    assert failure.reason == "OverflowError: date value out of range"


def test_a_long_message_is_cut_short() -> None:
    failure = classify(ValueError("x" * 5000))
    assert len(failure.reason) < 400
