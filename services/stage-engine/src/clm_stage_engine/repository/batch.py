"""A consumer batch's two statements: what it must know before it folds (one read), and
everything it writes (one write). A round trip each was most of a small batch's time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_domain.lifecycle import CustomerState, Transition
from clm_infra.consumer import Conflict
from clm_infra.db import (
    binary_positions,
    driver,
    driver_insert_args,
    driver_insert_sql,
    json_rows_sql,
)
from clm_infra.schema import (
    customer_events,
    customers,
    identity_links,
    processed_events,
    stage_transitions,
)
from clm_stage_engine.repository.rows import (
    STATE_COLUMNS,
    TRANSITION_COLUMNS,
    customer_row,
    transition_values,
)


@dataclass(frozen=True, slots=True)
class BatchLookup:
    """What a batch needs to know before it folds, read in one round trip."""

    applied: set[tuple[str, str]]  # (source, event_id) applied before
    erased: dict[str, datetime]  # customer hash → when erased
    links: dict[str, str]  # anonymous id → customer id
    # active webhook subscriptions: (id, stages wanted, segments wanted)
    subscriptions: list[tuple[int, list[str] | None, list[int] | None]]
    catalog: int  # the segment definitions' version (their lock held shared from here on)
    consenting: frozenset[str] = frozenset()  # anonymous ids it links that have consent rows


#: The advisory lock space (the first of two int4 keys) of anonymous ids: a batch holds each of
#: its anonymous ids' lock, exclusive where it links the id to a customer, shared where it
#: applies the id's own events, so a new profile and a new link of one id are never written
#: side by side by two lanes that cannot see each other's rows (the profile would stay beside
#: its customer, unmerged).
ANONYMOUS_ID_LOCKS = 0x636C6D61

# Joins, not ``EXISTS … OR EXISTS``: an OR of subqueries cannot become a semi-join, and
# Postgres ran them as hashed subplans that read the whole event log on every batch.
_LOOKUP = f"""
SELECT a.applied, e.hashes, e.times, l.anons, l.customers, s.subscriptions, k.held,
    g.catalog, c.consenting
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
    SELECT jsonb_agg(jsonb_build_array(id, stages, segments))::text AS subscriptions
    FROM webhook_subscriptions WHERE active
) s, (
    SELECT coalesce(bool_and(held), true) AS held FROM (
        SELECT pg_try_advisory_xact_lock({ANONYMOUS_ID_LOCKS}, hashtext(x)) AS held
        FROM jsonb_array_elements_text($4::jsonb) AS x
        UNION ALL
        SELECT pg_try_advisory_xact_lock_shared({ANONYMOUS_ID_LOCKS}, hashtext(x))
        FROM jsonb_array_elements_text($5::jsonb) AS x
    ) locks
) k, (
    SELECT clm_segment_catalog() AS catalog
) g, (
    SELECT array_agg(DISTINCT customer_id) AS consenting FROM customer_consent
    WHERE customer_id IN (SELECT jsonb_array_elements_text($4::jsonb))
) c
"""


async def lookup_batch(
    conn: AsyncConnection,
    keys: Sequence[tuple[str, str]],
    hashes: Sequence[str],
    ids: Sequence[str],
    anonymous: tuple[Sequence[str], Sequence[str]] = ((), ()),
) -> BatchLookup:
    """Which of ``keys`` (source, event_id) were applied before — in a customer's event log,
    or claimed in ``processed_events`` (events without a customer, events that failed) —,
    which ``hashes`` are of erased customers, the links of ``ids`` and the active webhook
    subscriptions, and the segment catalog's version (:func:`clm_segment_catalog` takes
    its lock shared, then reads it), and which of the anonymous ids it links have consent
    rows (to move onto their customers): six lookups, one statement, on the driver (for a
    small batch, SQLAlchemy's own execution of a statement costs more CPU than the
    statement's work).

    ``anonymous`` is the anonymous ids the batch links, then those whose own events it
    applies: it takes their locks (:data:`ANONYMOUS_ID_LOCKS`) without waiting, and raises
    :class:`AnonymousIdBusy` when another transaction holds one that conflicts."""
    linking, visiting = anonymous
    row = await (await driver(conn)).fetchrow(
        _LOOKUP,  # the values as JSON: see clm_infra.db.driver_insert_sql on the driver's arrays
        orjson.dumps(keys).decode(),
        orjson.dumps(sorted(set(hashes))).decode(),
        orjson.dumps(sorted(set(ids))).decode(),
        orjson.dumps(sorted(set(linking))).decode(),
        orjson.dumps(sorted(set(visiting))).decode(),
    )
    assert row is not None
    applied, hashes_, times, anons, linked, subscriptions, held, catalog, consenting = row
    if not held:
        raise AnonymousIdBusy("another batch is linking or applying one of its anonymous ids")
    return BatchLookup(
        applied={keys[n - 1] for n in applied or ()},
        erased=dict(zip(hashes_ or (), times or (), strict=True)),
        links=dict(zip(anons or (), linked or (), strict=True)),
        subscriptions=[(int(i), st, sg) for i, st, sg in orjson.loads(subscriptions or "[]")],
        catalog=int(catalog),
        consenting=frozenset(consenting or ()),
    )


_EVENT_COLUMNS = ("source", "event_id", "customer_id", "occurred_at", "payload")
_EVENT_BINARY = binary_positions(customer_events, _EVENT_COLUMNS)  # the payload: a blob slice
_CLAIM_COLUMNS = ("source", "event_id", "customer_id")
_LINK_COLUMNS = ("anonymous_id", "customer_id", "event_id")
_NEW = "ON CONFLICT DO NOTHING RETURNING 1"
_LINKS = "ON CONFLICT DO NOTHING"
_STATE_TUPLE = tuple(STATE_COLUMNS)
# A customer row read before is written back only if no one wrote it since: its xmin (the
# id of the transaction that last wrote it) is still the one read. The row is locked by the
# UPDATE itself (in the rows' order: customer id), and a concurrent writer's change is seen
# (READ COMMITTED re-checks the condition on the newest version once the writer commits).
_UPDATE = (
    "UPDATE customers AS c SET updated_at = now(), "
    + ", ".join(f"{name} = s.{name}" for name in STATE_COLUMNS if name != "customer_id")
    + " FROM ("
    + json_rows_sql(customers, _STATE_TUPLE, 5, f"CAST(r->>{len(STATE_COLUMNS)} AS xid) AS seen")
    + ") AS s WHERE c.customer_id = s.customer_id AND c.xmin = s.seen RETURNING 1"
)
# A new profile is inserted only if its id is linked to no customer. The batch holds the id's
# lock since its lookup, so a link committed after that lookup was committed before this
# statement began, and is seen here: the batch retries (StaleRows) and lands on the customer.
_INSERT = (
    f"INSERT INTO customers ({', '.join(STATE_COLUMNS)}) SELECT * FROM ("
    + json_rows_sql(customers, _STATE_TUPLE, 6)
    + ") AS s WHERE NOT EXISTS (SELECT 1 FROM identity_links AS l"
    + f" WHERE l.anonymous_id = s.customer_id) {_NEW}"
)
# The event log is a plain INSERT: a key already taken (a concurrent transaction applied the
# event after this batch's dedupe read) is a unique violation that fails the batch, which is
# what a lost claim must do anyway; ``ON CONFLICT`` is a speculative insertion per row.
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
    {_INSERT}
), moved AS (
    {driver_insert_sql(stage_transitions, TRANSITION_COLUMNS, via_json=True, first=7)}
)
SELECT (SELECT count(*) FROM claimed), (SELECT count(*) FROM updated),
    (SELECT count(*) FROM inserted), CAST(CAST(pg_current_xact_id() AS text) AS bigint)
"""
_EVENT_LOG_KEY = "pk_customer_events"


class ClaimLost(Conflict):
    """A concurrent transaction applied one of the batch's events first (the batch retries,
    and the retry sees it as a duplicate)."""


class AnonymousIdBusy(Conflict):
    """Another transaction holds the lock of one of the batch's anonymous ids (it links the
    id, or applies its events): the batch retries once that one is done, and sees its rows."""


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
    updates, inserts = _updates_and_inserts(states)
    try:
        counts = await (await driver(conn)).fetchrow(
            _WRITE,
            *driver_insert_args(events, len(_EVENT_COLUMNS), via_json=True, binary=_EVENT_BINARY),
            *driver_insert_args(claims, len(_CLAIM_COLUMNS), via_json=True),
            *driver_insert_args(links, len(_LINK_COLUMNS), via_json=True),
            *driver_insert_args(updates, len(STATE_COLUMNS) + 1, via_json=True),
            *driver_insert_args(inserts, len(STATE_COLUMNS), via_json=True),
            *driver_insert_args(
                [transition_values(t) for t in transitions],
                len(TRANSITION_COLUMNS),
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


def _updates_and_inserts(
    states: Sequence[tuple[CustomerState, int | None]],
) -> tuple[list[list[Any]], list[list[Any]]]:
    """The rows to update (each with the version read last) and those to insert, in customer
    order (rows locked in a stable order)."""
    updates: list[list[Any]] = []
    inserts: list[list[Any]] = []
    for state, version in sorted(states, key=lambda sv: sv[0].customer_id):
        row = customer_row(state)
        if version is None:
            inserts.append(row)
        else:
            row.append(version)
            updates.append(row)
    return updates, inserts
