"""Merging profiles into a customer: the identity merges a batch's links make, and the
explicit merge of two known customers. Both absorb the merged-away profile the same way
(:func:`absorb`); the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from clm_domain.lifecycle import CustomerState, Transition
from clm_domain.p_alive import AliveModel
from clm_domain.rules import LifecycleRules
from clm_stage_engine.processor import Fold, counted, fold_timeline
from clm_stage_engine.records import (
    Timeline,
    merge_record,
    removal_record,
    restatement_records,
)
from clm_stage_engine.repository import consent, customers, events, outbox, webhooks
from clm_stage_engine.usecases.errors import UnknownCustomer
from clm_stage_engine.usecases.segments import Segmenting
from clm_stage_engine.webhooks import stage_change_deliveries


async def absorb(
    conn: AsyncConnection, into: str, profiles: Mapping[str, CustomerState]
) -> list[tuple[str, bytes]]:
    """``profiles`` (their states before) become part of ``into``: their events, history and
    links move onto it and their rows go. Returns each one's ``identity_merge`` record, for
    the outbox (restated: the survivor's rebuild takes back what was counted of it). Their
    consent goes to ``into`` too (per purpose, the latest of all wins)."""
    await customers.absorb_profiles(conn, into, list(profiles))
    await consent.move_consents(conn, [(profile, into) for profile in profiles])
    return [
        (
            into,
            removal_record(
                "identity_merge",
                f"{profile}>{into}",
                profile,
                state.stage.value,
                merged_into=into,
                restated=True,
            ),
        )
        for profile, state in profiles.items()
    ]


@dataclass(frozen=True, slots=True)
class Merged:
    before: CustomerState
    after: CustomerState
    move: Transition | None


async def merge_customers(
    conn: AsyncConnection,
    into: str,
    other: str,
    *,
    rules: LifecycleRules,
    topic: str,
    now: datetime,
    model: AliveModel | None = None,
    segmenting: Segmenting | None = None,
) -> Merged:
    """Merge the known customer ``other`` into ``into``: rebuilt from both profiles' events,
    ``other`` linked to it, the move (if any) recorded and announced to the webhook
    subscribers, and the records published: ``other``'s ``identity_merge``, ``into``'s
    ``customer_merge`` and the restatement of both timelines. :class:`UnknownCustomer` if
    either is unknown. ``model``: the one the P(alive) rule reads (None: off);
    ``segmenting``: with it, ``other`` leaves its segments and ``into``'s are evaluated."""
    segments = None if segmenting is None else await segmenting.segments(conn)
    rows = await customers.lock_customers(conn, sorted({into, other}))
    missing = [c for c in (into, other) if c not in rows]
    if missing:
        raise UnknownCustomer(missing[0])
    before_merge, timeline = await _refold(conn, into, other, rows, Fold(rules, model), now)
    merged = timeline.state
    assert merged is not None
    before = rows[into]
    records = await absorb(conn, into, {other: rows[other]})
    await customers.insert_links(conn, [(other, into, f"merge:{now.isoformat()}")])
    await customers.upsert_customers(conn, [merged])
    move = await _record_move(conn, into, other, before, merged, now)
    # the two profiles' timelines as counted are taken back and the merged one added (the
    # survivor's and the absorbed profile's records say so, and say they are restated)
    restatements = restatement_records(
        into,
        cause=f"merge:{other}>{into}",
        reason="customer merge",
        retract=before_merge,
        add=[timeline],
        at=now,
    )
    records.append((into, merge_record(into, other, before, merged, move, now)))
    records.extend((into, r) for r in restatements)
    await outbox.insert_outbox(conn, topic, records)
    if segmenting is not None and segments is not None:
        await segmenting.written(conn, segments, {into: merged}, "merge", now, gone=[other])
    return Merged(before, merged, move)


async def _refold(
    conn: AsyncConnection,
    into: str,
    other: str,
    rows: Mapping[str, CustomerState],
    how: Fold,
    now: datetime,
) -> tuple[list[Timeline], Timeline]:
    """What was counted of each profile, and the survivor's timeline from both's events."""
    stored = await events.load_events(conn, [into, other])
    profiles = [(c, rows[c], stored.get(c, [])) for c in (into, other)]
    before_merge = counted(profiles, how.rules, how.model)
    both = [*stored.get(into, []), *stored.get(other, [])]
    timeline, _ = fold_timeline(into, both, how.rules, until=now, model=how.model)
    return before_merge, timeline


async def _record_move(
    conn: AsyncConnection,
    into: str,
    other: str,
    before: CustomerState,
    merged: CustomerState,
    now: datetime,
) -> Transition | None:
    """The survivor's move, if its stage changed: in its history, and announced like a
    batch's moves, in the same transaction as the move itself."""
    if merged.stage == before.stage:
        return None
    move = Transition(into, before.stage, merged.stage, now, "", f"merged {other}")
    await customers.insert_transitions(conn, [move])
    subscriptions = await webhooks.active_subscriptions(conn)
    await webhooks.enqueue_deliveries(conn, stage_change_deliveries([move], subscriptions))
    return move
