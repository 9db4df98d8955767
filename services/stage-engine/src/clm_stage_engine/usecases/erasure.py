"""Erasing a customer (GDPR): every row about it deleted and a keyed hash remembered, or its
facts and history kept under a pseudonym; either way an ``erasure`` record goes out. The
caller owns the transaction."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from clm_domain.lifecycle import CustomerState
from clm_domain.p_alive import AliveModel
from clm_domain.pseudonyms import Pseudonyms
from clm_domain.rules import LifecycleRules
from clm_infra.privacy import store as keystore
from clm_stage_engine.processor import Fold, counted
from clm_stage_engine.records import removal_record, restatement_records
from clm_stage_engine.repository import consent, customers, erasure, events, outbox, segment_live
from clm_stage_engine.usecases.errors import AlreadyAnonymised, UnknownCustomer
from clm_stage_engine.usecases.segments import Segmenting

Mode = Literal["erase", "anonymise"]


async def erase_customer(
    conn: AsyncConnection,
    customer_id: str,
    mode: Mode,
    *,
    rules: LifecycleRules,
    pseudonyms: Pseudonyms,
    topic: str,
    at: datetime,
    model: AliveModel | None = None,
    segmenting: Segmenting | None = None,
) -> str | None:
    """Erase or anonymise the customer (either way its data keys are shredded); returns its
    pseudonym (None: erased).
    :class:`UnknownCustomer`, or :class:`AlreadyAnonymised` when its pseudonym is taken.
    ``model``: the one the P(alive) rule reads (None: off), to tell what was counted;
    ``segmenting``: with it, the customer leaves its segments (an anonymised one's pseudonym
    enters those its facts match) and its spans forget its id."""
    # one erasure among the id's (it may come back with new events and be erased again):
    # its records' ids name it, so a consumer deduping by record id keeps each
    digest = f"{pseudonyms.tombstone(customer_id)}@{at.isoformat()}"
    segments = None if segmenting is None else await segmenting.segments(conn)
    current = await customers.get_customer(conn, customer_id)
    if current is None:
        raise UnknownCustomer(customer_id)
    ids = await segment_live.linked_ids(conn, customer_id)  # the rows erasure takes
    # shredding its data keys makes every copy of its personal fields unreadable: the events
    # topic's, its mirrors' and backups', the event log's
    await keystore.shred(conn, {*ids, *await erasure.sealed_subjects(conn, ids)})
    taken_back: list[bytes] = []
    pseudonym = None
    if mode == "erase":
        taken_back = await _erase(
            conn, customer_id, current, digest, Fold(rules, model), pseudonyms, at
        )
    else:
        pseudonym = pseudonyms.pseudonym(customer_id)
        await _anonymise(conn, customer_id, pseudonym)
    await consent.forget_consents(conn, ids)  # no longer someone to ask, either way
    record = removal_record(
        "erasure",
        digest,
        customer_id,
        current.stage.value,
        mode=mode,
        pseudonym=pseudonym,
        # anonymised customers stay counted in their stage
        stage_after=current.stage.value if pseudonym else None,
        restated=mode == "erase",
    )
    await outbox.insert_outbox(
        conn, topic, [(customer_id, record), *((customer_id, r) for r in taken_back)]
    )
    if segmenting is not None and segments is not None:
        kept = {} if pseudonym is None else {pseudonym: replace(current, customer_id=pseudonym)}
        await segmenting.written(conn, segments, kept, "erasure", at, gone=ids)
        await segment_live.forget_customer(conn, ids)
    return pseudonym


async def _erase(
    conn: AsyncConnection,
    customer_id: str,
    current: CustomerState,
    digest: str,
    how: Fold,
    pseudonyms: Pseudonyms,
    at: datetime,
) -> list[bytes]:
    """Delete the customer; returns the restatement taking back everything counted of it
    (its events' own figures too)."""
    stored = await events.load_events(conn, [customer_id])
    taken_back = restatement_records(
        customer_id,
        cause=f"erasure:{digest}",
        reason="erasure",
        retract=counted(
            [(customer_id, current, stored.get(customer_id, []))], how.rules, how.model
        ),
        add=[],
        at=at,
        events_too=True,
    )
    await erasure.erase_customer(conn, customer_id, pseudonyms.tombstone)
    return taken_back


async def _anonymise(conn: AsyncConnection, customer_id: str, pseudonym: str) -> None:
    if await customers.get_customer(conn, pseudonym) is not None:
        raise AlreadyAnonymised(customer_id)
    await erasure.anonymise_customer(conn, customer_id, pseudonym)
