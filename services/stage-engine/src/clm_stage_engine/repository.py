"""All SQL of the stage engine. Repositories never commit: the batch or request does."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from sqlalchemy import Text, delete, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clm_domain.events import Event, parse_stored_event_json
from clm_domain.kpis import exact_money
from clm_domain.lifecycle import CustomerState, Stage, Transition, make_state
from clm_infra.consumer import Conflict
from clm_infra.db import (
    any_text,
    binary_positions,
    driver,
    driver_insert,
    driver_insert_args,
    driver_insert_sql,
    json_rows_sql,
    lone_statement,
    pg_array,
)
from clm_infra.schema import (
    customer_events,
    customers,
    erasures,
    identity_links,
    processed_events,
    stage_transitions,
    webhook_deliveries,
    webhook_subscriptions,
)
from clm_stage_engine.known import Stored
from clm_stage_engine.outbox import pack_records

#: A customer row's state columns: CustomerState's fields, in their order.
_STATE_COLUMNS = [f.name for f in fields(CustomerState)]
_state_values = operator.attrgetter(*_STATE_COLUMNS)
_STAGE = _STATE_COLUMNS.index("stage")
_TUPLES = (_STATE_COLUMNS.index("recent_visits"), _STATE_COLUMNS.index("recent_purchases"))


def state_from_row(row: Any) -> CustomerState:
    """The state from a row with (at least) the state columns, by name."""
    return _state_from_values([getattr(row, name) for name in _STATE_COLUMNS])


#: Stages by value: a dict look-up, where Stage(value) costs ten times more.
_STAGES = {stage.value: stage for stage in Stage}


def _state_from_values(values: Sequence[Any]) -> CustomerState:
    """The state from a row of exactly ``_STATE_COLUMNS``, by position (the hot path)."""
    v = list(values)
    v[_STAGE] = _STAGES[v[_STAGE]]
    for i in _TUPLES:
        v[i] = tuple(v[i] or ())
    return make_state(*v)


def row_from_state(state: CustomerState) -> dict[str, Any]:
    row = {name: getattr(state, name) for name in _STATE_COLUMNS}
    row["stage"] = state.stage.value
    row["recent_visits"] = list(state.recent_visits)
    row["recent_purchases"] = list(state.recent_purchases)
    return row


_READ = (
    f"SELECT {', '.join(_STATE_COLUMNS)}, CAST(CAST(xmin AS text) AS bigint) FROM customers"
    " WHERE customer_id = ANY($1::text[]) ORDER BY customer_id"
)
_ID = _STATE_COLUMNS.index("customer_id")


async def read_customers(
    conn: AsyncConnection, ids: Iterable[str], *, lock: bool = False
) -> dict[str, Stored]:
    """The customers' rows and their versions (``xmin``), in a stable order; with ``lock``,
    locked (``FOR UPDATE``) until the transaction ends.

    On the driver: its rows come as the driver decodes them (arrays are lists already),
    without SQLAlchemy's per-row type processing."""
    wanted = sorted(ids)
    if not wanted:
        return {}
    rows = await (await driver(conn)).fetch(_READ + (" FOR UPDATE" if lock else ""), wanted)
    out = {}
    for r in rows:
        values = list(r)
        version = values.pop()
        out[r[_ID]] = Stored(_state_from_values(values), version)
    return out


async def lock_customers(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, CustomerState]:
    """Load and lock the customers' rows, in a stable order (no deadlocks)."""
    return {k: s.state for k, s in (await read_customers(conn, ids, lock=True)).items()}


_UPSERT_TAIL = "ON CONFLICT (customer_id) DO UPDATE SET updated_at = now(), " + ", ".join(
    f"{name} = excluded.{name}" for name in _STATE_COLUMNS if name != "customer_id"
)


async def upsert_customers(conn: AsyncConnection, states: Sequence[CustomerState]) -> None:
    """One statement for the whole batch, rows in a stable order."""
    if not states:
        return
    await driver_insert(
        await driver(conn),
        customers,
        _STATE_COLUMNS,
        _customer_rows(states),
        tail=_UPSERT_TAIL,
        via_json=True,
    )


def _customer_rows(states: Sequence[CustomerState]) -> list[Any]:
    """The states as rows of ``_STATE_COLUMNS``, in customer order (locks in a stable order)."""
    return [_row(s) for s in sorted(states, key=lambda s: s.customer_id)]


_MONEY = (_STATE_COLUMNS.index("revenue"), _STATE_COLUMNS.index("refunded"))


def _row(state: CustomerState) -> list[Any]:
    """A state's values as a JSON row of ``_STATE_COLUMNS``: arrays as literals, money as
    exact decimal strings (here, not in a ``default`` hook orjson would call back for)."""
    values = list(_state_values(state))
    for i in _TUPLES:
        values[i] = pg_array(values[i])
    for i in _MONEY:
        values[i] = format(values[i], "f")
    return values


async def insert_transitions(conn: AsyncConnection, transitions: Sequence[Transition]) -> None:
    if not transitions:
        return
    await driver_insert(
        await driver(conn),
        stage_transitions,
        _TRANSITION_COLUMNS,
        [_transition_values(t) for t in transitions],
        via_json=True,
    )


async def insert_outbox(
    conn: AsyncConnection, topic: str, records: Sequence[tuple[str, bytes]]
) -> tuple[int, bytes] | None:
    """Queue ``records`` ((customer key, value) pairs) for ``topic``, in order, as ONE outbox
    row of the caller's transaction (see :mod:`clm_stage_engine.outbox`): published once it
    commits, never if it rolls back. Returns the row's id and payload (None: no records), for
    the relay's :class:`~clm_stage_engine.relay.PayloadCache` once the transaction commits."""
    if not records:
        return None
    payload = pack_records(records)
    row_id = await (await driver(conn)).fetchval(_INSERT_OUTBOX, topic, len(records), payload)
    return int(row_id), payload


_INSERT_OUTBOX = (
    "INSERT INTO outbox_batches (topic, records, payload) VALUES ($1, $2, $3) RETURNING id"
)


@dataclass(frozen=True, slots=True)
class BatchLookup:
    """What a batch needs to know before it folds, read in one round trip."""

    applied: set[tuple[str, str]]  # (source, event_id) applied before
    erased: dict[str, datetime]  # customer hash → when erased
    links: dict[str, str]  # anonymous id → customer id
    subscriptions: list[tuple[int, list[str] | None]]  # active webhook subscriptions


# Joins, not ``EXISTS … OR EXISTS``: an OR of subqueries cannot become a semi-join, and
# Postgres ran them as hashed subplans that read the whole event log on every batch.
_LOOKUP = """
SELECT a.applied, e.hashes, e.times, l.anons, l.customers, s.subscriptions
FROM (
    SELECT array_agg(n) AS applied FROM (
        SELECT u.n FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS u(k, n)
        JOIN customer_events c ON c.source = u.k->>0 AND c.event_id = u.k->>1
        UNION
        SELECT u.n FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS u(k, n)
        JOIN processed_events p ON p.source = u.k->>0 AND p.event_id = u.k->>1
    ) hits
) a, (
    SELECT array_agg(customer_hash) AS hashes, array_agg(erased_at) AS times
    FROM erasures WHERE customer_hash IN (SELECT jsonb_array_elements_text($2::jsonb))
) e, (
    SELECT array_agg(anonymous_id) AS anons, array_agg(customer_id) AS customers
    FROM identity_links WHERE anonymous_id IN (SELECT jsonb_array_elements_text($3::jsonb))
) l, (
    SELECT jsonb_agg(jsonb_build_array(id, stages))::text AS subscriptions
    FROM webhook_subscriptions WHERE active
) s
"""


async def lookup_batch(
    conn: AsyncConnection,
    keys: Sequence[tuple[str, str]],
    hashes: Sequence[str],
    ids: Sequence[str],
) -> BatchLookup:
    """Which of ``keys`` (source, event_id) were applied before — in a customer's event log,
    or claimed in ``processed_events`` (events without a customer, events that failed) —,
    which ``hashes`` are of erased customers, the links of ``ids`` and the active webhook
    subscriptions: four lookups, one statement, on the driver (for a small batch,
    SQLAlchemy's own execution of a statement costs more CPU than the statement's work)."""
    row = await (await driver(conn)).fetchrow(
        _LOOKUP,  # the values as JSON: see clm_infra.db.driver_insert_sql on the driver's arrays
        orjson.dumps(keys).decode(),
        orjson.dumps(sorted(set(hashes))).decode(),
        orjson.dumps(sorted(set(ids))).decode(),
    )
    assert row is not None
    applied, hashes_, times, anons, linked, subscriptions = row
    return BatchLookup(
        applied={keys[n - 1] for n in applied or ()},
        erased=dict(zip(hashes_ or (), times or (), strict=True)),
        links=dict(zip(anons or (), linked or (), strict=True)),
        subscriptions=[(int(i), st) for i, st in orjson.loads(subscriptions or "[]")],
    )


_EVENT_COLUMNS = ("source", "event_id", "customer_id", "occurred_at", "payload")
_EVENT_BINARY = binary_positions(customer_events, _EVENT_COLUMNS)  # the payload: a blob slice
_CLAIM_COLUMNS = ("source", "event_id", "customer_id")
_LINK_COLUMNS = ("anonymous_id", "customer_id", "event_id")
_TRANSITION_COLUMNS = ("customer_id", "from_stage", "to_stage", "at", "event_id", "reason")
_NEW = "ON CONFLICT DO NOTHING RETURNING 1"
_LINKS = "ON CONFLICT DO NOTHING"
_STATE_TUPLE = tuple(_STATE_COLUMNS)
# A customer row read before is written back only if no one wrote it since: its xmin (the
# id of the transaction that last wrote it) is still the one read. The row is locked by the
# UPDATE itself (in the rows' order: customer id), and a concurrent writer's change is seen
# (READ COMMITTED re-checks the condition on the newest version once the writer commits).
_UPDATE = (
    "UPDATE customers AS c SET updated_at = now(), "
    + ", ".join(f"{name} = s.{name}" for name in _STATE_COLUMNS if name != "customer_id")
    + " FROM ("
    + json_rows_sql(customers, _STATE_TUPLE, 5, f"CAST(r->>{len(_STATE_COLUMNS)} AS xid) AS seen")
    + ") AS s WHERE c.customer_id = s.customer_id AND c.xmin = s.seen RETURNING 1"
)
# The event log is a plain INSERT: a key already taken (a concurrent transaction applied the
# event after this batch's dedupe read) is a unique violation that fails the batch, which is
# what a lost claim must do anyway; ``ON CONFLICT`` (a speculative insertion per row) cost
# Postgres ~1-4 µs more CPU per row.
_WRITE = f"""
WITH logged AS (
    {driver_insert_sql(customer_events, _EVENT_COLUMNS, via_json=True)}
), claimed AS (
    {driver_insert_sql(processed_events, _CLAIM_COLUMNS, _NEW, via_json=True, first=3)}
), linked AS (
    {driver_insert_sql(identity_links, _LINK_COLUMNS, _LINKS, via_json=True, first=4)}
), updated AS (
    {_UPDATE}
), inserted AS (
    {driver_insert_sql(customers, _STATE_TUPLE, _NEW, via_json=True, first=6)}
), moved AS (
    {driver_insert_sql(stage_transitions, _TRANSITION_COLUMNS, via_json=True, first=7)}
)
SELECT (SELECT count(*) FROM claimed), (SELECT count(*) FROM updated),
    (SELECT count(*) FROM inserted), CAST(CAST(pg_current_xact_id() AS text) AS bigint)
"""
_EVENT_LOG_KEY = "pk_customer_events"


class ClaimLost(Conflict):
    """A concurrent transaction applied one of the batch's events first (the batch retries,
    and the retry sees it as a duplicate)."""


class StaleRows(Conflict):
    """A customer row the batch read (or took as known) was written by someone else since,
    or one it found missing was inserted meanwhile: the batch retries, reading them again."""


async def write_batch(
    conn: AsyncConnection,
    *,
    events: Sequence[tuple[str, str, str, datetime, bytes]],
    claims: Sequence[tuple[str, str, str | None]],
    links: Sequence[tuple[str, str, str]],
    states: Sequence[tuple[CustomerState, int | None]],
    transitions: Sequence[Transition],
) -> int:
    """A batch's rows in one statement (a round trip each was most of a small batch's time):
    the applied events' event-log rows (each is the event's dedupe claim; its payload, the
    event's JSON), the claims of
    events that leave no event-log row, new identity links, the customers and the
    transitions (as :func:`insert_transitions`).

    ``states`` pairs each customer's new state with the version of its row as the batch read
    it, or None for a customer that had no row: each is updated only if still at that
    version, or inserted only if still missing; otherwise :class:`StaleRows`. An event-log
    row whose key is taken, or a claim that is not new, raises :class:`ClaimLost` (a
    concurrent transaction applied the event first). Returns the writing transaction's
    64-bit id (``pg_current_xact_id()``; its rows' xmin is the low 32 bits)."""
    ordered = sorted(states, key=lambda sv: sv[0].customer_id)  # rows locked in a stable order
    updates: list[list[Any]] = []  # rows with the version read last
    inserts: list[list[Any]] = []
    for state, version in ordered:
        row = _row(state)
        if version is None:
            inserts.append(row)
        else:
            row.append(version)
            updates.append(row)
    try:
        counts = await (await driver(conn)).fetchrow(
            _WRITE,
            *driver_insert_args(events, len(_EVENT_COLUMNS), via_json=True, binary=_EVENT_BINARY),
            *driver_insert_args(claims, len(_CLAIM_COLUMNS), via_json=True),
            *driver_insert_args(links, len(_LINK_COLUMNS), via_json=True),
            *driver_insert_args(updates, len(_STATE_COLUMNS) + 1, via_json=True),
            *driver_insert_args(inserts, len(_STATE_COLUMNS), via_json=True),
            *driver_insert_args(
                [_transition_values(t) for t in transitions],
                len(_TRANSITION_COLUMNS),
                via_json=True,
            ),
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != _EVENT_LOG_KEY:
            raise
        raise ClaimLost("an event was applied concurrently") from exc
    assert counts is not None
    claimed, updated, inserted, xid = counts
    if claimed != len(claims):
        raise ClaimLost(f"{len(claims) - claimed} events applied concurrently")
    if updated != len(updates) or inserted != len(inserts):
        raise StaleRows(
            f"{len(updates) - updated} of {len(updates)} customer rows changed since read, "
            f"{len(inserts) - inserted} of {len(inserts)} new ones inserted meanwhile"
        )
    return int(xid)


def _transition_values(t: Transition) -> tuple[Any, ...]:
    return (t.customer_id, t.from_stage, t.to_stage, t.at, t.event_id, t.reason)


_ONE = f"SELECT {', '.join(_STATE_COLUMNS)} FROM customers WHERE customer_id = $1"


async def read_customer(engine: AsyncEngine, customer_id: str) -> CustomerState | None:
    """The hot read: one statement on the driver (:func:`clm_infra.db.lone_statement`)."""
    async with lone_statement(engine) as drv:
        row = await drv.fetchrow(_ONE, customer_id)
    return None if row is None else _state_from_values(row)


async def get_customer(conn: AsyncConnection, customer_id: str) -> CustomerState | None:
    """The customer in ``conn``'s transaction (:func:`read_customer` outside one)."""
    row = await (await driver(conn)).fetchrow(_ONE, customer_id)
    return None if row is None else _state_from_values(row)


async def get_history(conn: AsyncConnection, customer_id: str, limit: int) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(
            stage_transitions.c.from_stage,
            stage_transitions.c.to_stage,
            stage_transitions.c.at,
            stage_transitions.c.event_id,
            stage_transitions.c.reason,
        )
        .where(stage_transitions.c.customer_id == customer_id)
        .order_by(stage_transitions.c.id)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows]


def jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return exact_money(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


async def insert_links(conn: AsyncConnection, links: Sequence[tuple[str, str, str]]) -> None:
    """(anonymous id, customer id, event id) links; an id already linked keeps its link."""
    if not links:
        return
    await conn.execute(
        insert(identity_links)
        .values([{"anonymous_id": a, "customer_id": c, "event_id": e} for a, c, e in links])
        .on_conflict_do_nothing()
    )


async def load_events(conn: AsyncConnection, keys: Sequence[str]) -> dict[str, list[Event]]:
    """Every stored event of these customers (the input of a rebuild)."""
    if not keys:
        return {}
    rows = await conn.execute(
        select(customer_events.c.customer_id, customer_events.c.payload).where(
            customer_events.c.customer_id == any_text(sorted(set(keys)))
        )
    )
    out: dict[str, list[Event]] = {}
    for r in rows:
        out.setdefault(r.customer_id, []).append(parse_stored_event_json(r.payload))
    return out


async def absorb_profiles(conn: AsyncConnection, into: str, profiles: Sequence[str]) -> None:
    """Move profiles' events and history onto a customer and drop their rows; ids linked to
    a profile (a merged-away customer's anonymous ids) now link to the customer."""
    if not profiles:
        return
    await conn.execute(
        update(identity_links)
        .where(identity_links.c.customer_id.in_(profiles))
        .values(customer_id=into)
    )
    await conn.execute(
        update(customer_events)
        .where(customer_events.c.customer_id.in_(profiles))
        .values(customer_id=into)
    )
    await conn.execute(
        update(stage_transitions)
        .where(stage_transitions.c.customer_id.in_(profiles))
        .values(customer_id=into)
    )
    await conn.execute(delete(customers).where(customers.c.customer_id.in_(profiles)))


async def active_subscriptions(conn: AsyncConnection) -> list[tuple[int, list[str] | None]]:
    """The active webhook subscriptions (id, stages wanted), as :func:`lookup_batch` reads
    them, for writers outside a batch (an explicit merge)."""
    rows = await conn.execute(
        select(webhook_subscriptions.c.id, webhook_subscriptions.c.stages).where(
            webhook_subscriptions.c.active
        )
    )
    return [(int(sid), list(stages) if stages else None) for sid, stages in rows]


async def enqueue_deliveries(conn: AsyncConnection, rows: Sequence[tuple[int, bytes]]) -> None:
    if not rows:
        return
    await conn.execute(
        insert(webhook_deliveries).values(
            [{"subscription_id": sid, "payload": payload} for sid, payload in rows]
        )
    )


async def list_customers(
    conn: AsyncConnection, *, stage: str | None, after: str | None, limit: int
) -> list[CustomerState]:
    """A page of customers by id (keyset: stable while rows are written)."""
    query = select(customers).order_by(customers.c.customer_id).limit(limit)
    if stage is not None:
        query = query.where(customers.c.stage == stage)
    if after is not None:
        query = query.where(customers.c.customer_id > after)
    return [state_from_row(r) for r in await conn.execute(query)]


async def count_by_stage(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(select(customers.c.stage, func.count()).group_by(customers.c.stage))
    return {stage: int(n) for stage, n in rows}


async def erase_customer(
    conn: AsyncConnection, customer_id: str, hasher: Callable[[str], str]
) -> bool:
    """Delete every row about the customer and its linked anonymous ids; remember their hashes."""
    anon_rows = await conn.execute(
        delete(identity_links)
        .where(identity_links.c.customer_id == customer_id)
        .returning(identity_links.c.anonymous_id)
    )
    ids = [customer_id, *(r.anonymous_id for r in anon_rows)]
    await conn.execute(delete(identity_links).where(identity_links.c.anonymous_id.in_(ids)))
    existed = await conn.execute(delete(customers).where(customers.c.customer_id.in_(ids)))
    await conn.execute(delete(stage_transitions).where(stage_transitions.c.customer_id.in_(ids)))
    await conn.execute(delete(customer_events).where(customer_events.c.customer_id.in_(ids)))
    await conn.execute(delete(processed_events).where(processed_events.c.customer_id.in_(ids)))
    stmt = insert(erasures).values([{"customer_hash": hasher(i), "keyed": True} for i in ids])
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=["customer_hash"], set_={"erased_at": func.now()})
    )
    return bool(existed.rowcount)


async def anonymise_customer(conn: AsyncConnection, customer_id: str, pseudonym: str) -> bool:
    """Keep the facts and history under a pseudonym; drop raw events and id links."""
    moved = await conn.execute(
        update(customers)
        .where(customers.c.customer_id == customer_id)
        .values(customer_id=pseudonym)
    )
    if not moved.rowcount:
        return False
    await conn.execute(
        update(stage_transitions)
        .where(stage_transitions.c.customer_id == customer_id)
        .values(customer_id=pseudonym)
    )
    # the event log is the events' dedupe claim: keep the claims (under the pseudonym) as
    # processed_events rows, so a redelivery of these events changes nothing
    await conn.execute(
        insert(processed_events)
        .from_select(
            ["source", "event_id", "customer_id"],
            select(
                customer_events.c.source,
                customer_events.c.event_id,
                literal(pseudonym, Text),
            ).where(customer_events.c.customer_id == customer_id),
        )
        .on_conflict_do_nothing()
    )
    await conn.execute(delete(customer_events).where(customer_events.c.customer_id == customer_id))
    await conn.execute(
        delete(identity_links).where(
            (identity_links.c.customer_id == customer_id)
            | (identity_links.c.anonymous_id == customer_id)
        )
    )
    await conn.execute(
        update(processed_events)
        .where(processed_events.c.customer_id == customer_id)
        .values(customer_id=pseudonym)
    )
    return True
