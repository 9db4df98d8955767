"""Async SQLAlchemy engine and session plumbing (asyncpg)."""

from __future__ import annotations

import contextlib
import functools
import socket
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from sqlalchemy import (
    ARRAY,
    Column,
    ColumnElement,
    LargeBinary,
    Table,
    Text,
    any_,
    bindparam,
    event,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    create_async_engine,
)

#: A pooled connection idle for longer than this is pinged before it is handed out.
PING_AFTER_IDLE_S = 1.0


def create_engine(database_url: str, *, pool_size: int = 10, app_name: str = "clm") -> AsyncEngine:
    """An engine for one process; create it in the lifespan, dispose it on shutdown.

    Connections idle for more than :data:`PING_AFTER_IDLE_S` are pinged at checkout, the
    others not: SQLAlchemy's ``pool_pre_ping`` pings every checkout, and with asyncpg a ping
    is three round trips (BEGIN, ``;``, ROLLBACK) — more than a customer read itself. A
    connection that Postgres dropped within the last second fails its statement instead, which
    answers 503 or is retried, as any statement cut by a restart is; the failed connection is
    discarded (through SQLAlchemy the whole pool's older connections are), so the next
    checkout gets a live or pinged one."""
    engine = create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=False,
        pool_timeout=10,
        connect_args={
            "server_settings": {"application_name": app_name},
            "timeout": 5,
            "command_timeout": 60,
        },
    )
    event.listen(engine.sync_engine, "checkin", _checked_in)
    event.listen(engine.sync_engine, "checkout", _ping_if_idle)
    return engine


def _checked_in(dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    at = record.info.get("checked_in_at")
    if at is None or time.monotonic() - at <= PING_AFTER_IDLE_S:
        return  # a new connection, or one used a moment ago
    try:
        dbapi_connection.ping()
    except Exception as exc:  # the pool replaces it and tries another
        raise sa_exc.DisconnectionError(str(exc)) from exc


async def ping(engine: AsyncEngine) -> bool:
    """True when Postgres answers a trivial query."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


# Postgres cannot be reached, is starting or shutting down, or dropped the connection; a pool
# with no connection to hand out in time. (ConnectionDoesNotExistError is a connection error.)
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    socket.gaierror,
    sa_exc.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)


def unavailable(exc: BaseException | None) -> bool:
    """Whether ``exc`` says Postgres is unavailable (worth a 503 and a retry), rather than
    that a statement is wrong. SQLAlchemy wraps the driver's errors: look through."""
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or unavailable(
            exc.orig.__cause__ if exc.orig is not None else None
        )
    return isinstance(exc, _UNAVAILABLE)


_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


def _pg_type(column: Column[Any]) -> str:
    return str(column.type.compile(dialect=_PG))


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return format(value, "f")  # exact: the server casts the string to NUMERIC
    raise TypeError(type(value).__name__)


async def driver(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under ``conn``, inside the transaction ``conn`` began.

    For the consumers' hot statements: SQLAlchemy's execution (greenlet hop, cache key,
    execution context, result proxy) costs several times the driver's own work for a
    statement of a small batch. The driver caches each statement's preparation by its text.
    SQLAlchemy begins the transaction on the connection's first statement: if none ran yet,
    one trivial statement opens it, so what runs on the driver commits or rolls back with
    ``conn``. The driver's errors are not wrapped (``unavailable`` looks at both)."""
    raw = await conn.get_raw_connection()
    drv: asyncpg.Connection = raw.driver_connection
    if not drv.is_in_transaction():
        await conn.exec_driver_sql("SELECT 1")
    return drv


@contextlib.asynccontextmanager
async def lone_statement(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled driver connection for one read statement, outside a transaction (a lone
    statement is atomic anyway): one round trip, where SQLAlchemy's ``connect()`` and
    ``execute()`` make three (BEGIN, the statement, ROLLBACK at the return to the pool). A
    connection the statement finds broken is invalidated, not returned to the pool."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        try:
            yield raw.driver_connection
        except BaseException as exc:
            if unavailable(exc):
                await conn.invalidate()
            raise


def rowcount(status: str) -> int:
    """The row count of a command tag (``INSERT 0 5``, ``UPDATE 3``)."""
    tail = status.rpartition(" ")[2]
    return int(tail) if tail.isdigit() else 0


@functools.lru_cache(maxsize=64)
def driver_insert_sql(
    table: Table, columns: tuple[str, ...], tail: str = "", via_json: bool = False, first: int = 1
) -> str:
    """``INSERT … SELECT …`` of many rows as one statement whatever their number (the same
    text every time, so it is prepared once), with the driver's ``$n`` parameters numbered
    from ``first`` (to be one part of a larger statement). ``tail`` is the rest of the
    statement (``ON CONFLICT …``, ``RETURNING …``), written with the real column names.

    Rows go as one array per column (``unnest``), or with ``via_json`` as ONE parameter, a
    JSON array of arrays that orjson writes in C and Postgres parses in C: for wide rows it
    costs the client several times less than arrays whose every value (timestamps, decimals)
    the driver encodes one by one. Values then: str, int, bool, None, aware datetimes,
    Decimals (sent as exact strings), :func:`pg_array` literals for array columns, bytes for
    binary columns: those go as slices of one more parameter (``$first + 1``), the rows'
    bytes end to end (see :func:`json_rows_sql`). The driver's own array encoding checks every
    element against three abstract base classes, in Python: for a batch's thousands of
    values that cost more than the statement's work."""
    if via_json:
        source = json_rows_sql(table, columns, first)
    else:
        aliases = [f"c{i}" for i in range(len(columns))]
        args = []
        picks = []
        for i, (alias, name) in enumerate(zip(aliases, columns, strict=True)):
            column = table.c[name]
            if isinstance(column.type, ARRAY):  # unnest flattens arrays: ship them as literals
                args.append(f"CAST(${first + i} AS TEXT[])")
                picks.append(f"CAST({alias} AS {_pg_type(column)})")
            else:
                args.append(f"CAST(${first + i} AS {_pg_type(column)}[])")
                picks.append(alias)
        source = (
            f"SELECT {', '.join(picks)} FROM unnest({', '.join(args)}) AS u({', '.join(aliases)})"
        )
    return f"INSERT INTO {table.name} ({', '.join(columns)}) {source} {tail}"


_BRACES = bytes.maketrans(b"[]", b"{}")


def pg_array(values: Sequence[datetime | int | float]) -> str:
    """An array column's value in a :func:`driver_insert_sql` JSON row: the Postgres array
    literal (``{"2026-12-01T10:00:00+00:00",…}``), which the server casts in one step (a JSON
    array took a subquery per row and column). For timestamps and numbers only: their JSON
    form has no escapes, which an array literal would read otherwise."""
    if not values:  # most profiles' (no purchase yet): no serializing
        return "{}"
    return orjson.dumps(values).translate(_BRACES).decode()


def binary_positions(table: Table, columns: Sequence[str]) -> tuple[int, ...]:
    """The positions of ``table``'s binary columns among ``columns``: the values
    :func:`driver_insert_args` sends as slices of the blob parameter."""
    return tuple(i for i, name in enumerate(columns) if isinstance(table.c[name].type, LargeBinary))


def json_rows_sql(table: Table, columns: tuple[str, ...], param: int, extra: str = "") -> str:
    """``SELECT …`` of the rows in parameter ``$param``, a JSON array of arrays of ``columns``
    values (see :func:`driver_insert_sql`), each column under its own name and typed as in
    ``table``; ``extra``: more select items, over the row ``r`` (``CAST(r->>5 AS xid) AS
    seen``: a value past the table's columns).

    A binary column's value is ``[start, length]``, a slice of parameter ``$param + 1`` (the
    rows' bytes end to end): Postgres copies it out, where the same bytes as a JSON string
    (event documents, quotes escaped) cost its JSON parser a step per character."""
    picks = []
    for i, name in enumerate(columns):
        column = table.c[name]
        if isinstance(column.type, LargeBinary):
            picks.append(
                f"substring(CAST(${param + 1} AS BYTEA) FROM CAST(r->{i}->>0 AS INTEGER) + 1"
                f" FOR CAST(r->{i}->>1 AS INTEGER)) AS {name}"
            )
        else:
            picks.append(f"CAST(r->>{i} AS {_pg_type(column)}) AS {name}")  # arrays: pg_array
    if extra:
        picks.append(extra)
    return f"SELECT {', '.join(picks)} FROM jsonb_array_elements(CAST(${param} AS JSONB)) AS r"


def driver_insert_args(
    rows: Sequence[Sequence[Any]],
    width: int,
    *,
    via_json: bool = False,
    binary: Sequence[int] = (),
) -> list[Any]:
    """The parameters of :func:`driver_insert_sql` for ``rows``; with ``via_json``, the
    ``binary`` positions (:func:`binary_positions`: bytes values) go in a blob after the JSON
    (a table with binary columns has it, however many rows)."""
    if not via_json:
        return [[row[i] for row in rows] for i in range(width)]
    if not binary:
        return [orjson.dumps(rows, default=_json_default).decode()]
    parts: list[bytes] = []
    at = 0
    sliced = []
    for row in rows:
        values = list(row)
        for i in binary:
            value = values[i]
            values[i] = (at, len(value))
            at += len(value)
            parts.append(value)
        sliced.append(values)
    return [orjson.dumps(sliced, default=_json_default).decode(), b"".join(parts)]


async def driver_insert(
    drv: asyncpg.Connection,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    tail: str = "",
    via_json: bool = False,
) -> int:
    """Insert ``rows`` (tuples in ``columns`` order) on the driver (:func:`driver`) with one
    statement (:func:`driver_insert_sql`); how many rows it wrote."""
    sql = driver_insert_sql(table, tuple(columns), tail, via_json)
    args = driver_insert_args(
        rows, len(columns), via_json=via_json, binary=binary_positions(table, columns)
    )
    status = await drv.execute(sql, *args)
    return rowcount(status)


def any_text(values: Sequence[str]) -> ColumnElement[Any]:
    """``= ANY(:array)``: one parameter whatever the number of values (an ``IN`` list renders
    one parameter per value, a new statement to prepare for every list length)."""
    return any_(bindparam("any_values", value=list(values), type_=ARRAY(Text), unique=True))
