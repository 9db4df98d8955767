"""Keeping segment memberships live: the segments of every customer a write changes are
evaluated in that write's transaction (the caller's), the spans opened and closed, each
customer's segment clock set, and each entry and exit queued for ``clm.segments.v1`` and
for the webhook subscribers of its segment.

A customer's membership is the segments its stored state matches at the writer's clock. Time
alone changes it only at the instants :func:`~clm_domain.segments.membership.due_at` names:
the sweeper evaluates a customer whose clock is due at that instant, and at each later one
until its clock passes now (:func:`walk`), so a change is recorded when it happened.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

import orjson
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_domain.lifecycle import CustomerState
from clm_domain.segments.compile import ScoreSource
from clm_domain.segments.membership import Segment, due_at, members_of
from clm_domain.segments.records import CAUSES, Cause, RecordKind, segment_record
from clm_stage_engine.repository import outbox, segment_live, webhooks
from clm_stage_engine.repository.segment_live import Span
from clm_stage_engine.segment_cache import SegmentCache

CHANGES = Counter(
    "clm_segment_changes_total", "Segment entries and exits recorded", ["kind", "cause"]
)

#: (subscription id, stages wanted, segments wanted): an active webhook subscription.
Subscription = tuple[int, list[str] | None, list[int] | None]
#: Time-crossings a sweep walks for one customer before it evaluates at its clock's now.
MAX_STEPS = 64


@dataclass(slots=True)
class Changed:
    """What a write did to memberships: the records for ``clm.segments.v1`` (customer id,
    value) and the webhook deliveries (subscription id, payload)."""

    records: list[tuple[str, bytes]] = field(default_factory=list)
    deliveries: list[tuple[int, bytes]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Step:
    """A customer's membership evaluated once: when, and the segments it was in."""

    at: datetime
    members: frozenset[int]


def walk(
    segments: Sequence[Segment],
    state: CustomerState,
    start: datetime,
    until: datetime,
    scores: ScoreSource | None,
) -> tuple[list[Step], datetime | None]:
    """The customer's memberships at ``start`` and at each instant after it, up to
    ``until``, when time alone may have changed them (at most :data:`MAX_STEPS`; the last
    step is always at ``until`` or before it, the state's memberships then), and the next
    such instant after the last step (None: never)."""
    steps = [Step(start, members_of(segments, state, start, scores))]
    at: datetime | None = due_at(segments, state, start)
    while at is not None and at <= until:
        if len(steps) >= MAX_STEPS:
            steps.append(Step(until, members_of(segments, state, until, scores)))
            return steps, due_at(segments, state, until)
        steps.append(Step(at, members_of(segments, state, at, scores)))
        at = due_at(segments, state, at)
    return steps, at


#: A customer's states over time: from each instant on (the first one: where its walk
#: starts), the state it was in, oldest first.
Pieces = Sequence[tuple[datetime, CustomerState]]


def walk_pieces(
    segments: Sequence[Segment], pieces: Pieces, until: datetime, scores: ScoreSource | None
) -> tuple[list[Step], datetime | None]:
    """:func:`walk` over each piece of a customer's states up to the next piece's instant
    (the last one up to ``until``): the memberships the states had, each when it had them."""
    steps: list[Step] = []
    due: datetime | None = None
    for n, (start, state) in enumerate(pieces):
        end = pieces[n + 1][0] if n + 1 < len(pieces) else until
        walked, due = walk(segments, state, start, end, scores)
        last = n + 1 == len(pieces)
        steps += [step for step in walked if last or step.at < end]
    return steps, due


def clamped(pieces: Pieces, start: datetime) -> list[tuple[datetime, CustomerState]]:
    """``pieces`` from ``start`` on: the state held at ``start``, then the later ones."""
    held = [p for p in pieces if p[0] <= start]
    later = [p for p in pieces if p[0] > start]
    return [(start, held[-1][1] if held else pieces[0][1]), *later]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """How a write evaluates: the segments, its clock, the scores and its subscriptions."""

    segments: Sequence[Segment]
    now: datetime
    scores: ScoreSource | None = None
    subscriptions: Sequence[Subscription] = ()
    announce: bool = True  # False: spans written, no records and no deliveries (backfill)
    clocked: Sequence[Segment] | None = None  # the segments the clocks follow (None: all)


async def evaluate(
    conn: AsyncConnection,
    how: Evaluation,
    states: Mapping[str, CustomerState],
    causes: Mapping[str, str],
    *,
    since: Mapping[str, datetime] | None = None,
    moves: Mapping[str, tuple[CustomerState, Pieces]] | None = None,
    gone: Mapping[str, str] | None = None,
) -> Changed:
    """Evaluate ``states`` (customer id → its state as written) at ``how.now``, each change
    caused by ``causes[id]`` (``event:<source>:<id>``, ``sweep``, ``merge`` …); a customer
    in ``since`` is walked from that instant (its due clock) to now; one in ``moves`` (the
    sweeper's: its state before them, then each move's instant and state after it) from its
    clock, if due before its first move, through each state. ``gone``: customers whose rows
    went (merged away, erased) → the cause of their exits."""
    gone = gone or {}
    moves = moves or {}
    found = await segment_live.open_spans(conn, [*states, *gone])
    by_id = {s.id: s for s in how.segments}
    entered: list[tuple[Span, int]] = []
    left: list[Span] = []
    clocks: dict[str, datetime | None] = {}
    since = {**(since or {}), **_move_starts(moves, found.clocks)}
    starts = await _starts(conn, how, states, since, found.spans)
    for cid, state in states.items():
        pieces = _pieces(moves.get(cid), state, starts[cid])
        steps, due = walk_pieces(how.segments, pieces, how.now, how.scores)
        held = {sid: at for sid, at in found.spans.get(cid, {}).items() if sid in by_id}
        for step in steps:
            _step(cid, step, held, causes[cid], entered, left, by_id)
        clocks[cid] = due if how.clocked is None else due_at(how.clocked, state, steps[-1].at)
    for cid, cause in gone.items():
        for sid, since_at in sorted(found.spans.get(cid, {}).items()):
            left.append(Span(sid, cid, max(how.now, since_at), since_at, cause))
        clocks[cid] = None
    # a backfill evaluates one segment: a change of the others still due stays due
    keep_due = how.clocked is not None
    moved = _moved_clocks(clocks, found.clocks, keep_due=keep_due)
    await segment_live.write_spans(
        conn, entered=entered, left=left, clocks=moved, keep_due=keep_due
    )
    return _announced(how, entered, left, by_id) if how.announce else Changed()


async def _starts(
    conn: AsyncConnection,
    how: Evaluation,
    customers: Iterable[str],
    since: Mapping[str, datetime],
    spans: Mapping[str, Mapping[int, datetime]],
) -> dict[str, datetime]:
    """Where each customer's walk starts: at its ``since`` (else now), but never before a
    change already recorded of it. A write after a sweep's move instant evaluated the state
    then, and a writer whose clock is behind another's (another replica) cannot record an
    exit before the entry it closes."""
    exits: Mapping[str, datetime] = {}
    if since:
        ids = [s.id for s in how.segments]
        exits = await segment_live.last_exits(conn, ids, list(since), min(since.values()))
    starts = {}
    for cid in customers:
        recorded = [*spans.get(cid, {}).values(), *([exits[cid]] if cid in exits else [])]
        starts[cid] = max([since.get(cid, how.now), *recorded])
    return starts


def _moved_clocks(
    clocks: Mapping[str, datetime | None],
    stored: Mapping[str, datetime],
    *,
    keep_due: bool,
) -> list[tuple[str, datetime | None]]:
    """The clocks to write: those that move (with ``keep_due``, only earlier ones: a clock
    already set stays if earlier, and none is removed)."""
    moved = []
    for cid, due in clocks.items():
        was = stored.get(cid)
        if due == was:
            continue
        if keep_due and (due is None or (was is not None and was < due)):
            continue
        moved.append((cid, due))
    return moved


def _pieces(
    moved: tuple[CustomerState, Pieces] | None, state: CustomerState, start: datetime
) -> list[tuple[datetime, CustomerState]]:
    """A customer's states from ``start`` on: ``state`` alone, or the state before its moves
    (until the first) and each move's."""
    if moved is None:
        return [(start, state)]
    before, after = moved
    return clamped([(min(start, after[0][0]), before), *after], start)


def _move_starts(
    moves: Mapping[str, tuple[CustomerState, Pieces]], clocks: Mapping[str, datetime]
) -> dict[str, datetime]:
    """Where a moved customer's walk starts: its clock, if due before its first move, else
    that move."""
    starts = {}
    for cid, (_, pieces) in moves.items():
        first = pieces[0][0]
        clock = clocks.get(cid)
        starts[cid] = clock if clock is not None and clock < first else first
    return starts


def _step(
    cid: str,
    step: Step,
    held: dict[int, datetime],
    cause: str,
    entered: list[tuple[Span, int]],
    left: list[Span],
    by_id: Mapping[int, Segment],
) -> None:
    """One evaluation's entries and exits against the spans ``held`` (updated)."""
    for sid in sorted(step.members - held.keys()):
        entered.append((Span(sid, cid, step.at, step.at, cause), by_id[sid].version))
        held[sid] = step.at
    for sid in sorted(held.keys() - step.members):
        left.append(Span(sid, cid, step.at, held.pop(sid), cause))


def _announced(
    how: Evaluation,
    entered: Sequence[tuple[Span, int]],
    left: Sequence[Span],
    by_id: Mapping[int, Segment],
) -> Changed:
    """The records and deliveries of the changes, each customer's in the order they happened
    (a walk's exit of a span entered in the same write follows its entry)."""
    changed = Changed()
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    moves: list[tuple[RecordKind, Span]] = [("enter", s) for s, _ in entered]
    moves += [("exit", s) for s in left]
    moves.sort(key=lambda m: (m[1].customer_id, m[1].at, m[0] == "enter"))
    for kind, span in moves:
        segment = by_id.get(span.segment_id)
        if segment is None:
            continue
        cause, event_id = _cause(span.cause)
        counts[kind, cause] += 1
        record = segment_record(
            kind,
            segment=segment,
            customer_id=span.customer_id,
            at=span.at,
            entered_at=span.entered_at,
            cause=cause,
            event_id=event_id,
        )
        changed.records.append((span.customer_id, record))
        changed.deliveries += segment_deliveries(kind, record, span.segment_id, how.subscriptions)
    for labels, n in counts.items():
        CHANGES.labels(*labels).inc(n)
    return changed


def _cause(stored: str) -> tuple[Cause, str | None]:
    """A span's stored cause as records name it, and the event's id when an event caused it."""
    if stored.startswith("event:"):
        return "event", stored.removeprefix("event:")
    if stored not in CAUSES:
        raise ValueError(f"not a cause of a segment record: {stored!r}")
    return cast(Cause, stored), None


def segment_deliveries(
    kind: str, record: bytes, segment_id: int, subscriptions: Sequence[Subscription]
) -> list[tuple[int, bytes]]:
    """The webhook deliveries of one entry or exit: to each subscription of its segment."""
    wanted = [sid for sid, _, segments in subscriptions if segments and segment_id in segments]
    if not wanted:
        return []
    doc = orjson.loads(record)
    for private in ("schema", "record_id", "kind"):
        doc.pop(private, None)
    payload = orjson.dumps(
        {"type": "segment.entered" if kind == "enter" else "segment.exited", **doc}
    )
    return [(sid, payload) for sid in wanted]


@dataclass(frozen=True, slots=True)
class Segmenting:
    """What a writer outside a consumer batch (the sweeper, a merge, an erasure) needs to keep
    memberships: the compiled segments, the topic of their records, the scores."""

    cache: SegmentCache
    topic: str
    scores: ScoreSource | None = None

    async def segments(self, conn: AsyncConnection) -> Sequence[Segment]:
        """The segments now; takes the catalog's lock shared for the transaction (a writer
        takes it before it locks any customer row: see ``docs/segments.md``)."""
        return await self.cache.current(conn)

    async def written(
        self,
        conn: AsyncConnection,
        segments: Sequence[Segment],
        states: Mapping[str, CustomerState],
        cause: str,
        now: datetime,
        *,
        since: Mapping[str, datetime] | None = None,
        moves: Mapping[str, tuple[CustomerState, Pieces]] | None = None,
        gone: Sequence[str] = (),
    ) -> int:
        """Evaluate ``states`` (``since`` and ``moves`` as :func:`evaluate`'s, and
        ``gone``'s exits), every change caused by ``cause``; queue the records and
        deliveries. Returns the changes."""
        if not (states or gone):
            return 0
        subscriptions = await webhooks.active_subscriptions(conn)
        how = Evaluation(segments, now, self.scores, subscriptions)
        changed = await evaluate(
            conn,
            how,
            states,
            dict.fromkeys(states, cause),
            since=since,
            moves=moves,
            gone=dict.fromkeys(gone, cause),
        )
        await outbox.insert_outbox(conn, self.topic, changed.records)
        await webhooks.enqueue_deliveries(conn, changed.deliveries)
        return len(changed.records)
