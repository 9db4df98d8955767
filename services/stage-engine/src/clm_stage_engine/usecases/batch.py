"""Applying one micro-batch of new events, inside the caller's transaction.

1. drop events of erased customers that happened before their erasure (nothing of them is
   stored, not even a dedupe row), and events applied before: an applied event's claim is
   its row in the customer's event log (``customer_events``), and only events without one
   (no customer, or failed) are claimed in ``processed_events``; the claims are written with
   the batch, and one that finds its key taken (a concurrent transaction got there first)
   rolls the batch back for a retry;
2. resolve identities (:mod:`.identity`); the lookup took the locks of the batch's anonymous
   ids, so a visitor's new profile and the link that merges it are never written side by side
   by two lanes (the second retries, and sees the first's rows);
3. take the customers' rows this process wrote last from memory (:mod:`~clm_stage_engine.known`)
   and read the others (with a merge, read and lock them all); rebuild the customers with late
   events or merges from their stored events, fold the rest incrementally (pure
   :mod:`~clm_stage_engine.processor`);
4. write rows, the event log, links, history, outbox records and webhook deliveries; each
   customer row only if still at the version the batch started from (else the batch is
   retried: :class:`~clm_stage_engine.repository.batch.StaleRows`); ``consent`` events are
   not folded (not a touchpoint: :mod:`clm_domain.consent`): claimed, and their latest per
   customer and purpose written, before the deliveries (which leave out customers who
   withdrew marketing consent);
5. with segments defined, evaluate the segments of every customer written (and the exits
   of the profiles merged away) at the batch's clock (:mod:`.segments`).

The SQL round trips of a batch, in order: the lookup, the customers' rows (those not known),
the stored events of the customers rebuilt (if any), the merges (if any), the write, with
segments defined the customers' open spans and the spans' write, the outbox row (and one for
the segment records, if any), the consent moved to newly linked customers and the consent
recorded (each only if any), the webhook deliveries.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_domain.consent import latest_consents
from clm_domain.events import Consent, Event
from clm_domain.lifecycle import CustomerState, customer_key
from clm_domain.p_alive import AliveModel
from clm_domain.pseudonyms import Pseudonyms
from clm_domain.rules import LifecycleRules
from clm_domain.segments.compile import ScoreSource
from clm_stage_engine.known import KnownStates, Stored
from clm_stage_engine.processor import FoldResult, Item, fold, needs_history
from clm_stage_engine.repository import batch, consent, customers, events, outbox, webhooks
from clm_stage_engine.segment_cache import SegmentCache
from clm_stage_engine.usecases.identity import Identities, resolve_identities
from clm_stage_engine.usecases.merge import absorb
from clm_stage_engine.usecases.segments import Changed, Evaluation, evaluate
from clm_stage_engine.webhooks import stage_change_deliveries

log = logging.getLogger(__name__)

EVENTS = Counter("clm_events_processed_total", "Events applied by the stage engine", ["type"])
DUPLICATES = Counter("clm_events_duplicate_total", "Events already applied, skipped")
ERASED = Counter("clm_events_erased_total", "Events of erased customers, dropped")
MERGES = Counter("clm_identity_merges_total", "Anonymous profiles merged into customers")
TRANSITIONS = Counter(
    "clm_stage_transitions_total", "Stage moves recorded", ["from_stage", "to_stage"]
)
PHASE_SECONDS = Counter(
    "clm_stage_engine_phase_seconds_total",
    "Time the stage engine spent per phase of its batches (where a batch's time goes)",
    ["phase"],
)

#: A new event: its tag (the Kafka record), the event, and the JSON it came as.
New = tuple[Any, Event, bytes | None]


class Phases:
    """Per-batch phase timer: ``lap("decode")`` books the time since the previous lap."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        PHASE_SECONDS.labels(phase).inc(now - self._last)
        self._last = now


@dataclass(frozen=True, slots=True)
class Loaded:
    """The batch's customers as stored: rows (and versions), the profiles each absorbs, and
    the stored events of those rebuilt (per customer: its own, then each absorbed one's)."""

    rows: dict[str, Stored]
    states: dict[str, CustomerState]
    merges: dict[str, list[str]]
    histories: dict[str, list[list[Event]]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the batch did, and what to remember once it commits: the writing transaction's
    id and the outbox row (id, payload; None: no records); and the consent events it
    recorded (not folded: not in ``result``)."""

    result: FoldResult[Any]
    xid: int
    queued: tuple[int, bytes] | None
    consents: int = 0


class BatchApplier:
    def __init__(
        self,
        lifecycle_topic: str,
        rules: LifecycleRules,
        known: KnownStates,
        pseudonyms: Pseudonyms,
        segments_topic: str | None = None,
    ) -> None:
        self.lifecycle_topic = lifecycle_topic
        self.rules = rules
        self.known = known
        self.pseudonyms = pseudonyms
        # where segment entries and exits go (None: the caller keeps no segments)
        self.segments_topic = segments_topic
        self.segments = SegmentCache()

    async def apply(
        self,
        conn: AsyncConnection,
        fresh: Sequence[New],
        *,
        now: datetime,
        wanted: set[str],
        phases: Phases,
        model: AliveModel | None = None,
        scores: ScoreSource | None = None,
    ) -> Outcome:
        """Apply ``fresh`` (decoded, each (source, event id) once) as of ``now``; ``wanted``
        collects the customers taken from memory (to forget if the batch fails); ``model``:
        the one the P(alive) rule reads (None: off), the sweeper's too; ``scores``: the
        customers' predictions, for segments on them (None: no model)."""
        new, found = await self._unseen(conn, fresh)
        phases.lap("dedupe")
        identities = resolve_identities((e for _, e, _ in new), found.links)
        landed = [Item.of(tag, e, identities.landing(e), wire) for tag, e, wire in new]
        items = [i for i in landed if not isinstance(i.event, Consent)]
        consents = [i for i in landed if isinstance(i.event, Consent)]
        phases.lap("identities")
        loaded = await self._load(conn, items, identities, wanted)
        phases.lap("load")
        result = self._fold(items, loaded, now, model)
        phases.lap("fold")
        xid, queued = await self._write(conn, (items, consents), result, loaded, identities, found)
        phases.lap("write")
        await self._segment_changes(conn, result, loaded, found, Evaluation((), now, scores))
        phases.lap("segments")
        return Outcome(result, xid, queued, len(consents))

    async def _unseen(
        self, conn: AsyncConnection, fresh: Sequence[New]
    ) -> tuple[list[New], batch.BatchLookup]:
        """The events neither applied before nor of an erased customer, and the lookup."""
        ids = {i for _, e, _ in fresh for i in (e.customer_id, e.anonymous_id) if i is not None}
        found = await batch.lookup_batch(
            conn,
            [(e.source, e.event_id) for _, e, _ in fresh],
            [self.pseudonyms.tombstone(i) for i in ids],
            list(ids),
            _anonymous_ids(e for _, e, _ in fresh),
        )
        kept = self._drop_erased(found.erased, fresh)
        new = [n for n in kept if (n[1].source, n[1].event_id) not in found.applied]
        DUPLICATES.inc(len(kept) - len(new))
        return new, found

    def _drop_erased(self, erased: dict[str, datetime], fresh: Sequence[New]) -> list[New]:
        """Events of an erased customer (either id) from before the erasure are dropped."""
        if not erased:
            return list(fresh)
        kept = []
        for new in fresh:
            event = new[1]
            times = [
                erased.get(self.pseudonyms.tombstone(i))
                for i in (event.customer_id, event.anonymous_id)
                if i is not None
            ]
            if any(t is not None and event.occurred_at <= t for t in times):
                ERASED.inc()
                continue
            kept.append(new)
        return kept

    async def _load(
        self,
        conn: AsyncConnection,
        items: Sequence[Item[Any]],
        identities: Identities,
        wanted: set[str],
    ) -> Loaded:
        keys = {i.key for i in items if i.key is not None}
        wanted.update(keys, identities.new_links)
        if identities.new_links:  # a merge deletes profiles: read and lock every row written
            rows = await customers.read_customers(conn, wanted, lock=True)
        else:
            rows = self.known.take(wanted)
            rows.update(await customers.read_customers(conn, wanted - rows.keys()))
        states = {key: row.state for key, row in rows.items()}
        merges = identities.merges(states, keys)
        rebuild = needs_history(items, states, merges)
        absorbed = {a for anons in merges.values() for a in anons}
        stored = await events.load_events(conn, sorted(rebuild | absorbed))
        histories = {
            key: [stored.get(key, []), *(stored.get(anon, []) for anon in merges.get(key, []))]
            for key in rebuild
        }
        return Loaded(rows, states, merges, histories)

    def _fold(
        self, items: Sequence[Item[Any]], loaded: Loaded, now: datetime, model: AliveModel | None
    ) -> FoldResult[Any]:
        keys = {i.key for i in items if i.key is not None}
        return fold(
            items,
            {k: v for k, v in loaded.states.items() if k in keys},
            self.rules,
            now=now,
            histories=loaded.histories,
            merges=loaded.merges,
            merged_states={a: loaded.states[a] for anons in loaded.merges.values() for a in anons},
            model=model,
        )

    async def _write(
        self,
        conn: AsyncConnection,
        batch_items: tuple[Sequence[Item[Any]], Sequence[Item[Any]]],
        result: FoldResult[Any],
        loaded: Loaded,
        identities: Identities,
        found: batch.BatchLookup,
    ) -> tuple[int, tuple[int, bytes] | None]:
        """Write the batch; return the writing transaction's id and the outbox row's id and
        payload (None: no records). Every customer row goes back only if still at the
        version read (none: it had no row). A new event's claim that finds its key taken
        means a concurrent transaction applied it after this batch's dedupe read: the batch
        rolls back, and the retry sees it as a duplicate. ``batch_items``: the events folded,
        and the consent events (claimed, and recorded once the links are)."""
        items, consents = batch_items
        records = list(result.outbox)
        records += await self._absorb(conn, loaded)
        xid = await batch.write_batch(
            conn,
            events=_logged(result),
            claims=_claims(items, result) + _claimed(consents),
            links=[(anon, cid, eid) for anon, (cid, eid) in sorted(identities.new_links.items())],
            states=[(state, _version(loaded, key)) for key, state in result.states.items()],
            transitions=result.transitions,
        )
        queued = await outbox.insert_outbox(conn, self.lifecycle_topic, records)
        await _record_consents(conn, consents, identities, found.consenting)
        deliveries = stage_change_deliveries(result.transitions, found.subscriptions)
        await webhooks.enqueue_deliveries(conn, deliveries)
        _count(result)
        return xid, queued

    async def _segment_changes(
        self,
        conn: AsyncConnection,
        result: FoldResult[Any],
        loaded: Loaded,
        found: batch.BatchLookup,
        how: Evaluation,
    ) -> None:
        """The segments of the customers written, evaluated at the batch's clock; the
        profiles merged away leave theirs. Nothing to do (no round trip) while no segment
        is defined."""
        if self.segments_topic is None:
            return
        segments = await self.segments.at(conn, found.catalog)
        if not segments:
            return
        causes = dict.fromkeys(result.states, "merge")  # a survivor of links alone
        causes.update(
            (i.key, f"event:{i.event.source}:{i.event.event_id}")
            for i in result.applied
            if i.key is not None
        )
        gone = {anon: "merge" for anons in loaded.merges.values() for anon in anons}
        how = Evaluation(segments, how.now, how.scores, found.subscriptions)
        changed: Changed = await evaluate(conn, how, result.states, causes, gone=gone)
        await outbox.insert_outbox(conn, self.segments_topic, changed.records)
        await webhooks.enqueue_deliveries(conn, changed.deliveries)

    async def _absorb(self, conn: AsyncConnection, loaded: Loaded) -> list[tuple[str, bytes]]:
        """The identity merges: each profile absorbed by its customer; their records."""
        records = []
        for cid, anons in sorted(loaded.merges.items()):
            records += await absorb(conn, cid, {anon: loaded.states[anon] for anon in anons})
            for anon in anons:
                MERGES.inc()
                log.info("identity merge", extra={"anonymous_id": anon, "customer_id": cid})
        return records


def _anonymous_ids(events: Iterable[Event]) -> tuple[list[str], list[str]]:
    """The anonymous ids the events link to a customer, and those whose own events they are
    (the batch locks both: see :func:`~clm_stage_engine.repository.batch.lookup_batch`)."""
    linking: list[str] = []
    visiting: list[str] = []
    for e in events:
        if e.anonymous_id is None:
            continue
        if e.customer_id is None:
            visiting.append(e.anonymous_id)
        elif e.customer_id != e.anonymous_id:
            linking.append(e.anonymous_id)
    return linking, visiting


async def _record_consents(
    conn: AsyncConnection,
    consents: Sequence[Item[Any]],
    identities: Identities,
    consenting: Collection[str],
) -> None:
    """The consent of each newly linked anonymous id that has some (``consenting``, as the
    lookup found it under the id's lock) goes to its customer, then the batch's consent
    events are recorded (the latest per customer and purpose). Nothing to do: no round trip."""
    await consent.move_consents(
        conn,
        [(anon, cid) for anon, (cid, _) in identities.new_links.items() if anon in consenting],
    )
    landed = [(i.key, i.event) for i in consents if i.key and isinstance(i.event, Consent)]
    await consent.record_consents(conn, latest_consents(landed))
    if consents:
        EVENTS.labels("consent").inc(len(consents))


def _version(loaded: Loaded, key: str) -> int | None:
    row = loaded.rows.get(key)
    return None if row is None else row.version


def _logged(result: FoldResult[Any]) -> list[tuple[str, str, str, datetime, bytes]]:
    """The applied customer events' event-log rows (each is the event's dedupe claim)."""
    return [
        (i.event.source, i.event.event_id, i.key, i.event.occurred_at, i.wire)
        for i in result.applied
        if i.key is not None
    ]


def _claims(
    items: Sequence[Item[Any]], result: FoldResult[Any]
) -> list[tuple[str, str, str | None]]:
    """The ``processed_events`` claims of the events that leave no event-log row: those
    without a customer and those that failed."""
    failed = {id(tag) for tag, _ in result.failed}
    return [
        (i.event.source, i.event.event_id, customer_key(i.event))
        for i in items
        if i.key is None or id(i.tag) in failed
    ]


def _claimed(consents: Sequence[Item[Any]]) -> list[tuple[str, str, str | None]]:
    """The claims of consent events (they leave no event-log row either)."""
    return [(i.event.source, i.event.event_id, customer_key(i.event)) for i in consents]


def _count(result: FoldResult[Any]) -> None:
    for event_type, n in collections.Counter(i.event.type for i in result.applied).items():
        EVENTS.labels(event_type).inc(n)
    moves = collections.Counter((t.from_stage or "none", t.to_stage) for t in result.transitions)
    for (from_stage, to_stage), n in moves.items():
        TRANSITIONS.labels(from_stage, to_stage).inc(n)
