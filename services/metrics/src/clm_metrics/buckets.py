"""From lifecycle records to bucket increments (pure).

Every record adds small integers (or money) to named metrics in the bucket of its minute. Two
attributions:

* **event** metrics (visits, orders, revenue, refunds, tickets, reviews, NPS, spend …) are keyed
  by the event's own ``source`` and ``channel`` (spend: the channel it was spent on);
* **customer** metrics (leads, new customers, flows between stages, time in stage, customer
  revenue for CLV) are keyed by the customer's first-touch ``first_source`` / ``first_channel``
  after the event, as CAC and CLV by acquisition channel need.

Metric names (``currency`` is ``""`` for counts):

``events``, ``events:<type>``, ``orders``/``revenue`` (per currency), ``refunds``,
``refund_amount``, ``tickets_opened``, ``tickets_solved``, ``csat_answers``,
``csat_satisfied``, ``reviews``, ``rating_sum``, ``nps_responses``, ``nps_promoters``,
``nps_detractors``, ``spend`` (per currency), ``campaign_spend:<campaign>``,
``leads``, ``converted_leads`` (in the minute the lead was created), ``new_customers``,
``repeat_purchases``, ``reactivations``, ``customer_revenue`` (per currency),
``campaign_leads:<campaign>``, ``campaign_customers:<campaign>``,
``flow:<from>:<to>`` (``from`` is ``""`` for a new customer), ``stay:<stage>:<bin>``; and
``tickets_open``, the open tickets' level changes (+1 at a ticket's open, -1 at its solve),
written from the per-ticket states of :mod:`clm_metrics.tickets`, not from here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

#: Stays shorter than a minute go in bin 0; bin ``b`` ≥ 1 holds
#: ``[STAY_RATIO**(b-1), STAY_RATIO**b)`` minutes. 1.25 keeps the histogram's median within
#: ±12 % of the true median.
STAY_RATIO = 1.25
STAY_BINS = 80
#: Customers who count as active (a paying relationship not yet ended).
ACTIVE_STAGES = ("conversion", "retention", "loyalty", "at_risk")
ONE = Decimal(1)


@dataclass(frozen=True, slots=True, order=True)
class BucketKey:
    bucket_start: datetime
    metric: str
    source: str
    channel: str
    currency: str


def floor_minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def stay_bin(duration: timedelta) -> int:
    minutes = duration.total_seconds() / 60
    if minutes < 1:
        return 0
    return min(STAY_BINS - 1, 1 + int(math.log(minutes, STAY_RATIO)))


def stay_bin_middle(b: int) -> timedelta:
    """A representative duration of bin ``b`` (the geometric middle of its bounds)."""
    if b == 0:
        return timedelta(seconds=30)
    return timedelta(minutes=STAY_RATIO ** (b - 0.5))


def instant(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def _entered_before(record: Mapping[str, Any]) -> datetime | None:
    """When the customer entered ``stage_before`` (None when the record cannot say)."""
    explicit = record.get("stage_before_entered_at")
    if explicit:
        return instant(explicit)
    facts = record.get("customer") or {}
    derived = {
        "reach": facts.get("first_seen_at"),
        "acquisition": facts.get("acquired_at"),
        "conversion": facts.get("converted_at"),
    }.get(str(record.get("stage_before")))
    return instant(derived) if derived else None


def _count_moves(
    moves: Iterable[Mapping[str, Any]],
    entered: datetime | None,
    facts: Mapping[str, Any],
    add: Callable[[str, datetime], None],
) -> None:
    """Each move at its own time: the flow, the stay it ended (from when the customer entered
    the stage it left), and a lead when it reached acquisition from nowhere or reach."""
    campaign = facts.get("first_campaign")
    for move in moves:
        at, origin, target = instant(move["at"]), move["from"] or "", move["to"]
        add(f"flow:{origin}:{target}", at)
        if target == "acquisition" and origin in ("", "reach"):
            add("leads", at)
            if campaign:
                add(f"campaign_leads:{campaign}", at)
        if origin and entered is not None:
            add(f"stay:{origin}:{stay_bin(at - entered)}", at)
        entered = at


def _no_event_increments(record: Mapping[str, Any]) -> list[tuple[BucketKey, Decimal]]:
    """Records without an event: a sweeper's time-based moves (``kind: time``: flows and stays
    at the moves' times), a profile leaving (``identity_merge``, ``erasure``: a flow out to
    nowhere, ``flow:<stage>:``, so stage counts at a window's start stay consistent) and the
    survivor of an explicit merge (``customer_merge``: the flow ``flow:<before>:<after>`` at
    the merge, nothing else — no lead nor stay: the merged profiles' own moves counted those
    when they happened)."""
    if record.get("kind") == "time":
        return customer_increments(record)
    facts = record.get("customer") or {}
    src, ch = str(facts.get("first_source") or ""), str(facts.get("first_channel") or "")
    out: list[tuple[BucketKey, Decimal]] = []
    before, after = record.get("stage_before"), record.get("stage_after")
    if before is not None and before != after and record.get("at"):
        flow = f"flow:{before}:{after or ''}"
        out.append((BucketKey(floor_minute(instant(record["at"])), flow, src, ch, ""), Decimal(1)))
    return out


def increments(record: Mapping[str, Any]) -> list[tuple[BucketKey, Decimal]]:
    """The bucket increments one lifecycle record makes (v1 or v2): an event record's event
    part, and its customer part unless a restatement carries it (``restated``)."""
    kind = record.get("kind")
    if kind == "correction":
        return _correction_increments(record)
    if kind == "restatement":
        return restatement_increments(record)
    if record.get("event") is None:
        return [] if record.get("restated") else _no_event_increments(record)
    out = event_increments(record)
    if not record.get("restated"):
        out.extend(customer_increments(record))
    return out


def restatement_increments(record: Mapping[str, Any]) -> list[tuple[BucketKey, Decimal]]:
    """A ``restatement``: each ``retract`` item's customer part taken back (its event part
    too when ``events_too``: an erasure), each ``add`` item's customer part added."""
    out: list[tuple[BucketKey, Decimal]] = []
    events_too = bool(record.get("events_too"))
    for item in _items(record, "retract"):
        out.extend((k, -v) for k, v in customer_increments(item))
        if events_too and item.get("event") is not None:
            out.extend((k, -v) for k, v in event_increments(item))
    for item in _items(record, "add"):
        out.extend(customer_increments(item))
    return out


def _items(record: Mapping[str, Any], side: str) -> Iterator[Mapping[str, Any]]:
    for timeline in record.get(side) or ():
        yield from timeline["items"]


def event_increments(record: Mapping[str, Any]) -> list[tuple[BucketKey, Decimal]]:
    """An event's own figures, by its source, channel and minute (the spend: its period's)."""
    event = record["event"]
    type_ = str(event["type"])
    at = floor_minute(instant(event["occurred_at"]))
    ev_src = str(event.get("source") or "")
    ev_ch = str(event.get("channel") or "")
    props = event.get("properties") or {}
    figures = [("events", ONE, ""), (f"events:{type_}", ONE, ""), *_event_figures(type_, props)]
    out = [(BucketKey(at, m, ev_src, ev_ch, currency), v) for m, v, currency in figures]
    if type_ == "marketing_spend":
        when = floor_minute(instant(props["period_start"]))
        channel, currency = str(props["channel"]), str(props["currency"])
        amount = Decimal(str(props["amount"]))
        campaign = f"campaign_spend:{props['campaign']}"
        out.append((BucketKey(when, "spend", ev_src, channel, currency), amount))
        out.append((BucketKey(when, campaign, ev_src, channel, currency), amount))
    return out


def _event_figures(type_: str, props: Mapping[str, Any]) -> list[tuple[str, Decimal, str]]:
    """``(metric, value, currency)`` an event of ``type_`` adds besides its count."""
    if type_ == "purchase":
        currency = str(props["currency"])
        return [("orders", ONE, currency), ("revenue", Decimal(str(props["amount"])), currency)]
    if type_ == "refund":
        amount = Decimal(str(props["amount"]))
        return [("refunds", ONE, ""), ("refund_amount", amount, str(props.get("currency") or ""))]
    if type_ == "support_ticket":
        opened = props["status"] == "opened"
        out = [("tickets_opened" if opened else "tickets_solved", ONE, "")]
        csat = props.get("csat")
        if csat is not None:
            out.append(("csat_answers", ONE, ""))
            if int(csat) >= 4:
                out.append(("csat_satisfied", ONE, ""))
        return out
    if type_ == "review":
        return [("reviews", ONE, ""), ("rating_sum", Decimal(int(props["rating"])), "")]
    if type_ == "nps_response":
        score = int(props["score"])
        out = [("nps_responses", ONE, "")]
        if score >= 9:
            out.append(("nps_promoters", ONE, ""))
        elif score <= 6:
            out.append(("nps_detractors", ONE, ""))
        return out
    return []


def customer_increments(record: Mapping[str, Any]) -> list[tuple[BucketKey, Decimal]]:
    """What a record (or a timeline item) counts of its customer, by first touch after it:
    the moves (flows, stays, leads), the flags, the revenue of a purchase; a record without
    an event (a sweep) only its moves."""
    event = record.get("event")
    facts = record.get("customer") or {}
    if event is None:
        return _sweep_increments(record, facts)
    at = floor_minute(instant(event["occurred_at"]))
    ev_src = str(event.get("source") or "")
    ft_src = str(facts.get("first_source") or ev_src)
    ft_ch = str(facts.get("first_channel") or "")
    out: list[tuple[BucketKey, Decimal]] = []

    def cu(metric: str, value: Decimal = ONE, currency: str = "", when: datetime = at) -> None:
        out.append((BucketKey(floor_minute(when), metric, ft_src, ft_ch, currency), value))

    if event["type"] == "purchase":
        props = event.get("properties") or {}
        cu("customer_revenue", Decimal(str(props["amount"])), str(props["currency"]))
    before, after = record.get("stage_before"), record.get("stage_after")
    moves = record.get("transitions")
    if moves is None:  # a record from before per-move accounting: its net move, at the last
        last = record.get("transition") or {}
        net = after is not None and before != after
        moves = [{"from": before, "to": after, "at": last.get("at") or at}] if net else []
    entered = _entered_before(record) if before is not None else None
    _count_moves(moves, entered, facts, lambda metric, when: cu(metric, when=when))
    out.extend(_flag_increments(record, facts, at, ev_src, ONE))
    return out


def _sweep_increments(
    record: Mapping[str, Any], facts: Mapping[str, Any]
) -> list[tuple[BucketKey, Decimal]]:
    """A record without an event: its moves, by the customer's first touch."""
    src, ch = str(facts.get("first_source") or ""), str(facts.get("first_channel") or "")
    out: list[tuple[BucketKey, Decimal]] = []

    def add(metric: str, when: datetime) -> None:
        out.append((BucketKey(floor_minute(when), metric, src, ch, ""), ONE))

    _count_moves(record.get("transitions") or [], _entered_before(record), facts, add)
    return out


def _flag_increments(
    flags: Mapping[str, Any], facts: Mapping[str, Any], at: datetime, ev_src: str, sign: Decimal
) -> list[tuple[BucketKey, Decimal]]:
    """What a record's flags count (``sign`` -1: take them back), by first touch after the
    event, in the event's minute (converted leads: in the minute the lead was created)."""
    ft_src = str(facts.get("first_source") or ev_src)
    ft_ch = str(facts.get("first_channel") or "")
    campaign = facts.get("first_campaign")
    out: list[tuple[BucketKey, Decimal]] = []

    def cu(metric: str, when: datetime = at) -> None:
        out.append((BucketKey(floor_minute(when), metric, ft_src, ft_ch, ""), sign))

    if flags.get("first_purchase"):
        cu("new_customers")
        if campaign:
            cu(f"campaign_customers:{campaign}")
        if facts.get("acquired_at"):
            cu("converted_leads", when=instant(facts["acquired_at"]))
    if flags.get("repeat_purchase"):
        cu("repeat_purchases")
    if flags.get("reactivation"):
        cu("reactivations")
    return out


def _correction_increments(record: Mapping[str, Any]) -> list[tuple[BucketKey, Decimal]]:
    """A ``correction`` record: the flags its event was published with, taken back (with the
    facts they were counted by), and its flags now, added."""
    corrected = record["corrected"]
    event = corrected["event"]
    at = floor_minute(instant(event["occurred_at"]))
    src = str(event.get("source") or "")
    return [
        *_flag_increments(corrected, corrected.get("customer") or {}, at, src, Decimal(-1)),
        *_flag_increments(record, record.get("customer") or {}, at, src, Decimal(1)),
    ]


def aggregate(pairs: Iterable[tuple[BucketKey, Decimal]]) -> dict[BucketKey, Decimal]:
    out: dict[BucketKey, Decimal] = {}
    for k, v in pairs:
        out[k] = out.get(k, Decimal(0)) + v
    return out


def stage_deltas(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many customers each stage gained or lost (a new customer has no stage before; a
    restatement takes its ``retract`` timelines' stages back and adds its ``add`` ones)."""
    out: dict[str, int] = {}
    for r in records:
        if r.get("kind") == "restatement":
            for side, sign in (("retract", -1), ("add", 1)):
                for timeline in r.get(side) or ():
                    if timeline.get("stage"):
                        stage = str(timeline["stage"])
                        out[stage] = out.get(stage, 0) + sign
            continue
        if r.get("restated"):
            continue
        before, after = r.get("stage_before"), r.get("stage_after")
        if before == after:
            continue
        if before is not None:
            out[before] = out.get(before, 0) - 1
        if after is not None:  # None: the profile left (merged into another, or erased)
            out[after] = out.get(after, 0) + 1
    return {s: d for s, d in out.items() if d != 0}
