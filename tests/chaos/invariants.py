"""The invariant a fault-injection run must keep, checked on plain data (no I/O).

Like Kafka's system tests and Jepsen's checkers: the ingest's answers are the oracle. Every
event it acknowledged (2xx) must be applied exactly once; an event that was sent but not
acknowledged (a ``503`` whose record reached the broker anyway) may be applied or not, but only
once; nothing that was never sent may appear. On top of that: each customer's stage equals the
truth for the set of events applied, the stored offsets stand at the log end, the dead-letter
topic holds exactly the poison records (each with its reason) and the metrics service counted
every applied event once.

:func:`violations` lists what is wrong (empty: the run kept its promises); the unit tests feed
it hand-made inputs, so it is known to fail when it should.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field

EventKey = tuple[str, str]  # (source, event_id): the stage engine's idempotency key
SHOWN = 5  # examples quoted per violation


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record of the dead-letter topic: where it came from and why it is there."""

    partition: int
    offset: int
    reason: str


@dataclass(frozen=True)
class Expected:
    """What the run's ledger says must be true.

    ``sent``: every event posted (or produced), with the customer it belongs to (None: no
    customer, e.g. marketing spend); ``acked``: those the ingest acknowledged; ``stages``: the
    truth's stage of each customer for the events applied; ``poison``: (partition, offset) of
    each record produced as poison, with a word its DLQ reason must contain; ``erased``:
    customers that must have left no trace (their events are not expected either).
    """

    sent: Mapping[EventKey, str | None]
    acked: Set[EventKey]
    stages: Mapping[str, str]
    poison: Mapping[tuple[int, int], str] = field(default_factory=dict)
    erased: Set[str] = frozenset()


@dataclass(frozen=True)
class Observed:
    """What the stack holds at the end (read from Postgres, Kafka and the metrics API).

    ``offsets``/``log_end``: per topic, partition → stored next offset / log end offset (a
    partition without a stored offset counts as 0). ``kpi_events``: the metrics service's
    ``events`` KPI over a range holding every event (None: not checked).
    """

    processed: Sequence[EventKey]
    logged: Sequence[tuple[EventKey, str]]
    customer_events: Mapping[str, int]
    stages: Mapping[str, str]
    offsets: Mapping[str, Mapping[int, int]]
    log_end: Mapping[str, Mapping[int, int]]
    dlq: Sequence[DeadLetter] = ()
    metrics_records: Sequence[str] | None = None
    kpi_events: int | None = None


def _some(items: Set[object] | Sequence[object]) -> str:
    ordered = sorted(items, key=repr)
    more = f" … ({len(ordered)} in all)" if len(ordered) > SHOWN else ""
    return ", ".join(repr(i) for i in ordered[:SHOWN]) + more


def _doubles(items: Sequence[object]) -> list[object]:
    return [item for item, n in Counter(items).items() if n > 1]


def record_id(key: EventKey) -> str:
    """The lifecycle record id of an applied event (what the metrics service dedupes by)."""
    return f"{key[0]}:{key[1]}"


def violations(expected: Expected, observed: Observed) -> list[str]:
    """Every way ``observed`` breaks the invariant (empty when it holds)."""
    checks = (_claims, _customer_logs, _stages, _offsets, _dead_letters, _metrics)
    return [found for check in checks for found in check(expected, observed)]


def _claims(expected: Expected, observed: Observed) -> list[str]:
    """Every acknowledged event applied once, nothing else, no erased customer's again."""
    out: list[str] = []
    processed = set(observed.processed)
    wanted = {k for k in expected.acked if expected.sent.get(k) not in expected.erased}
    if doubled := _doubles(observed.processed):
        out.append(
            f"doubled: events claimed more than once (event log, processed_events): {_some(doubled)}"
        )
    if lost := wanted - processed:
        out.append(f"lost: acknowledged events never applied: {_some(lost)}")
    if phantom := processed - set(expected.sent):
        out.append(f"phantom: applied events nobody sent: {_some(phantom)}")
    if unacked_erased := {k for k in processed if expected.sent.get(k) in expected.erased}:
        out.append(f"erased customers' events applied again: {_some(unacked_erased)}")
    return out


def _customer_logs(expected: Expected, observed: Observed) -> list[str]:
    """Each applied event once in its own customer's log, and each customer's count right."""
    out: list[str] = []
    logged = [key for key, _ in observed.logged]
    if doubled := _doubles(logged):
        out.append(f"doubled: events in a customer's log more than once: {_some(doubled)}")
    misfiled = {
        key for key, customer in observed.logged if expected.sent.get(key, customer) != customer
    }
    if misfiled:
        out.append(f"events logged under another customer: {_some(misfiled)}")
    processed = set(observed.processed)
    with_customer = {k for k in processed if expected.sent.get(k) is not None}
    if unlogged := with_customer - set(logged):
        out.append(f"applied events missing from the customer's log: {_some(unlogged)}")
    per_customer = Counter(c for k in with_customer if (c := expected.sent[k]) is not None)
    miscounted: set[tuple[str, int, int]] = {
        (c, observed.customer_events.get(c, 0), n)
        for c, n in per_customer.items()
        if observed.customer_events.get(c, 0) != n
    }
    miscounted |= {
        (c, n, 0) for c, n in observed.customer_events.items() if c not in per_customer and n
    }
    if miscounted:
        out.append(
            "customers counting another number of events than were applied "
            f"(customer, counted, applied): {_some(miscounted)}"
        )
    return out


def _stages(expected: Expected, observed: Observed) -> list[str]:
    """No erased customer back; every stage as the truth has it."""
    out: list[str] = []
    if left := set(observed.stages) & set(expected.erased):
        out.append(f"erased customers are back: {_some(left)}")
    wrong: set[tuple[str, str | None, str | None]] = {
        (c, observed.stages.get(c), stage)
        for c, stage in expected.stages.items()
        if observed.stages.get(c) != stage
    }
    wrong |= {(c, s, None) for c, s in observed.stages.items() if c not in expected.stages}
    if wrong:
        out.append(f"stages differ from the truth (customer, got, want): {_some(wrong)}")
    return out


def _offsets(_: Expected, observed: Observed) -> list[str]:
    """Every stored offset at its log's end."""
    out: list[str] = []
    for topic, ends in sorted(observed.log_end.items()):
        stored = observed.offsets.get(topic, {})
        behind: set[tuple[int, int, int | None]] = {
            (p, stored.get(p, 0), end) for p, end in ends.items() if stored.get(p, 0) != end
        }
        behind |= {(p, n, None) for p, n in stored.items() if p not in ends}
        if behind:
            out.append(
                f"stored offsets of {topic} not at the log end (partition, stored, end): "
                f"{_some(behind)}"
            )
    return out


def _dead_letters(expected: Expected, observed: Observed) -> list[str]:
    """The DLQ holds exactly the poison, each saying why."""
    out: list[str] = []
    dead = {(d.partition, d.offset): d.reason for d in observed.dlq}
    if missing := set(expected.poison) - set(dead):
        out.append(f"poison records missing from the DLQ: {_some(missing)}")
    if extra := set(dead) - set(expected.poison):
        out.append(f"records in the DLQ that are not poison: {_some(extra)}")
    unexplained = {
        (at, dead[at])
        for at, word in expected.poison.items()
        if at in dead and word not in dead[at]
    }
    if unexplained:
        out.append(f"DLQ reasons not saying why (position, reason): {_some(unexplained)}")
    return out


def _metrics(_: Expected, observed: Observed) -> list[str]:
    """The metrics counted every applied event's record once."""
    out: list[str] = []
    processed = set(observed.processed)
    if observed.metrics_records is not None:
        if doubled := _doubles(observed.metrics_records):
            out.append(f"doubled: lifecycle records counted twice by metrics: {_some(doubled)}")
        if uncounted := {record_id(k) for k in processed} - set(observed.metrics_records):
            out.append(f"applied events the metrics never counted: {_some(uncounted)}")
    if observed.kpi_events is not None and observed.kpi_events != len(processed):
        out.append(
            f"the metrics' events KPI is {observed.kpi_events}, {len(processed)} events applied"
        )
    return out


def assert_invariant(expected: Expected, observed: Observed) -> None:
    """Fail with every violation at once."""
    found = violations(expected, observed)
    assert not found, "the invariant does not hold:\n- " + "\n- ".join(found)
