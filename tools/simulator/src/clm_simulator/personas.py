"""Realistic customer journeys from personas (pure, seeded): what ``clm simulate`` sends.

Each customer follows one :class:`Persona`, a script that is meant to leave it in one stage as
of ``as_of`` under the documented rules (:data:`INTENDED`): anonymous visitors who only look,
leads who sign up and never buy, one-time, repeat and loyal buyers, customers who went quiet
(at risk) or long ago (churned), who cancelled, who were won back, and whose only order was
refunded in full. Around that: ad clicks and visits from a channel mix, log-normal order values
in the customer's currency, partial refunds, support tickets with CSAT, reviews, NPS answers,
referrals, email engagement, and daily marketing spend per paid channel and campaign.

Time: every journey lies before ``as_of``; its latest activity falls in ``[as_of - recent,
as_of]`` (the quiet ones' inactivity moves too), older history is backdated up to
``history_days``. No customer is within ``margin`` of an inactivity threshold at ``as_of``, so
the stages hold for a while after it (see :func:`clm_simulator.replay.next_inactivity_move`).
Quiet customers either show up again without buying (a win-back email opened: the stage engine
applies the inactivity moves when that event comes) or stay silent (its sweeper moves them).

The persona's intended stage is an independent statement of what the reducer must compute; a
unit test holds the two together.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from clm_domain.lifecycle import Stage


class Persona(StrEnum):
    VISITOR = "visitor"
    LEAD = "lead"
    REFUNDED = "refunded"
    FIRST_TIME = "first_time"
    REPEAT = "repeat"
    LOYAL = "loyal"
    LAPSING = "lapsing"
    LAPSED = "lapsed"
    CANCELLED = "cancelled"
    WON_BACK = "won_back"


#: The stage each persona ends in, as of ``as_of``, under the documented rules.
INTENDED: dict[Persona, Stage] = {
    Persona.VISITOR: Stage.REACH,
    Persona.LEAD: Stage.ACQUISITION,
    Persona.REFUNDED: Stage.ACQUISITION,
    Persona.FIRST_TIME: Stage.CONVERSION,
    Persona.REPEAT: Stage.RETENTION,
    Persona.LOYAL: Stage.LOYALTY,
    Persona.LAPSING: Stage.AT_RISK,
    Persona.LAPSED: Stage.CHURNED,
    Persona.CANCELLED: Stage.CHURNED,
    Persona.WON_BACK: Stage.RETENTION,
}

DEFAULT_MIX: dict[Persona, float] = {
    Persona.VISITOR: 0.22,
    Persona.LEAD: 0.15,
    Persona.REFUNDED: 0.03,
    Persona.FIRST_TIME: 0.14,
    Persona.REPEAT: 0.10,
    Persona.LOYAL: 0.08,
    Persona.LAPSING: 0.09,
    Persona.LAPSED: 0.08,
    Persona.CANCELLED: 0.04,
    Persona.WON_BACK: 0.07,
}
#: First-touch channels and their shares.
CHANNEL_MIX: dict[str, float] = {
    "paid_search": 0.25,
    "social": 0.20,
    "organic": 0.17,
    "direct": 0.18,
    "email": 0.10,
    "referral": 0.10,
}
#: Paid channels: the ones ad clicks and marketing spend come from, with their campaigns.
CAMPAIGNS: dict[str, tuple[str, ...]] = {
    "paid_search": ("brand-search", "generic-search"),
    "social": ("spring-social", "retarget-social"),
    "email": ("newsletter", "win-back"),
    "display": ("black-friday-display",),
}
CURRENCIES: dict[str, float] = {"USD": 0.85, "EUR": 0.10, "GBP": 0.05}
CSAT = (1, 2, 3, 4, 5)
CSAT_WEIGHTS = (0.05, 0.07, 0.13, 0.30, 0.45)
DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """What to generate. Inactivity thresholds must be the rules' (default 60 and 180 days)."""

    seed: int
    customers: int
    as_of: datetime
    source: str = "dev"
    prefix: str = "sim"
    recent: timedelta = timedelta(days=30)
    history_days: int = 400
    mix: Mapping[Persona, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    median_order: Decimal = Decimal("45")
    spend_days: int = 30
    at_risk_days: int = 60
    churned_days: int = 180
    margin: timedelta = timedelta(hours=6)


@dataclass(frozen=True, slots=True)
class Simulation:
    """Event documents (as a client POSTs them, time-ordered) and each customer's persona."""

    docs: list[dict[str, Any]]
    personas: dict[str, Persona]
    as_of: datetime

    def intended(self) -> dict[str, Stage]:
        return {cid: INTENDED[p] for cid, p in self.personas.items()}


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _pick(rng: random.Random, weights: Mapping[Any, float]) -> Any:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


class _Journey:
    """One customer's events, emitted in any order and sorted at the end."""

    def __init__(
        self, rng: random.Random, cfg: SimConfig, key: dict[str, str], tag: str, channel: str
    ) -> None:
        self.rng, self.cfg, self.key, self.tag, self.channel = rng, cfg, key, tag, channel
        self.docs: list[dict[str, Any]] = []
        self.currency: str = _pick(rng, CURRENCIES)
        self.orders: list[tuple[str, Decimal]] = []

    def emit(self, at: datetime, type_: str, channel: str | None, **props: Any) -> None:
        at = min(at, self.cfg.as_of).replace(microsecond=0)
        doc: dict[str, Any] = {
            "event_id": f"{self.tag}-e{len(self.docs) + 1}",
            "type": type_,
            "occurred_at": iso(at),
            "source": self.cfg.source,
            "properties": props,
            **self.key,
        }
        if channel is not None:
            doc["channel"] = channel
        self.docs.append(doc)

    # ------------------------------------------------------------------ building blocks
    def first_touch(self, at: datetime, visits: int = 1) -> None:
        """An ad click (paid channels) then ``visits`` site visits over the next hours."""
        if self.channel in CAMPAIGNS:
            campaign = self.rng.choice(CAMPAIGNS[self.channel])
            self.emit(at, "ad_click", self.channel, campaign=campaign, ad=f"{campaign}-ad")
            at += timedelta(seconds=self.rng.randint(5, 120))
        for n in range(visits):
            self.visit(at + timedelta(minutes=n * self.rng.randint(10, 600)))

    def visit(self, at: datetime, channel: str | None = None) -> None:
        page = self.rng.choice(("/", "/products", "/pricing", "/blog", "/products/42"))
        self.emit(at, "site_visit", channel or self.channel, url=f"https://shop.example{page}")

    def signup(self, at: datetime) -> None:
        self.emit(at, "signup", self.channel, plan=self.rng.choice(("free", "free", "pro")))

    def amount(self) -> Decimal:
        median = float(self.cfg.median_order)
        value = self.rng.lognormvariate(math.log(median), 0.7)
        return max(Decimal("1.00"), Decimal(str(round(value, 2))))

    def purchase(self, at: datetime) -> None:
        order = f"{self.tag}-o{len(self.orders) + 1}"
        amount = self.amount()
        self.orders.append((order, amount))
        channel = self.rng.choice((self.channel, "direct", "email"))
        items = [{"sku": f"sku-{self.rng.randint(1, 60)}", "quantity": self.rng.randint(1, 3)}]
        self.emit(
            at,
            "purchase",
            channel,
            order_id=order,
            amount=str(amount),
            currency=self.currency,
            items=items,
        )

    def refund(self, at: datetime, *, full: bool) -> None:
        order, paid = self.orders[-1]
        amount = (
            paid
            if full
            else (paid * Decimal(self.rng.randint(10, 60)) / 100).quantize(Decimal("0.01"))
        )
        self.emit(at, "refund", None, order_id=order, amount=str(amount), currency=self.currency)

    def ticket(self, at: datetime) -> None:
        ticket = f"{self.tag}-t{len(self.docs) + 1}"
        self.emit(at, "support_ticket", None, ticket_id=ticket, status="opened")
        if self.rng.random() < 0.8:
            props: dict[str, Any] = {"ticket_id": ticket, "status": "solved"}
            if self.rng.random() < 0.7:
                props["csat"] = self.rng.choices(CSAT, weights=CSAT_WEIGHTS)[0]
            self.emit(
                at + timedelta(hours=self.rng.randint(1, 48)), "support_ticket", None, **props
            )

    def email(self, at: datetime, campaign: str = "newsletter") -> None:
        action = self.rng.choice(("opened", "opened", "clicked"))
        self.emit(at, "email_engagement", "email", action=action, campaign=campaign)

    def chatter(self, start: datetime, end: datetime, *, promoter: bool) -> None:
        """After a purchase: maybe a ticket, a review, an NPS answer, emails (no stage effect
        unless ``promoter``: then the review and the answer are the promoting kind)."""
        rng = self.rng
        if end <= start:
            return
        if rng.random() < 0.25:
            self.ticket(between(rng, start, end))  # solved up to 48 h later (by as_of)
        if rng.random() < 0.3:
            rating = rng.randint(4, 5) if promoter else rng.randint(1, 3)
            self.emit(between(rng, start, end), "review", None, rating=rating)
        if rng.random() < 0.35:
            score = rng.randint(9, 10) if promoter else rng.choice((0, 3, 5, 6, 7, 7, 8, 8))
            self.emit(between(rng, start, end), "nps_response", None, score=score)
        for _ in range(rng.randint(0, 2)):
            self.email(between(rng, start, end))


def between(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """A time in ``[start, end]`` (``start`` when the span is empty), whole seconds."""
    span = int((end - start).total_seconds())
    return start + timedelta(seconds=rng.randint(0, span)) if span > 0 else start


def _purchases(j: _Journey, start: datetime, end: datetime, count: int) -> list[datetime]:
    """``count`` purchases in ``[start, end]``, the last one at ``end``; their times."""
    times = [*sorted(between(j.rng, start, end) for _ in range(count - 1)), end]
    for at in times:
        j.purchase(at)
    return times


def _journey(j: _Journey, persona: Persona, cfg: SimConfig) -> None:
    rng, as_of = j.rng, cfg.as_of
    at_risk, churned = timedelta(days=cfg.at_risk_days), timedelta(days=cfg.churned_days)
    m = cfg.margin
    recent = min(cfg.recent, at_risk - 2 * m - DAY)
    end = as_of - timedelta(seconds=rng.randint(0, int(recent.total_seconds())))
    history = timedelta(days=rng.randint(20, max(21, cfg.history_days)))
    if persona is Persona.VISITOR:
        visits = rng.randint(0, 1) if j.channel in CAMPAIGNS else 1
        j.first_touch(end - timedelta(minutes=rng.randint(1, 600)), visits=visits)
        if rng.random() < 0.3:
            j.visit(end, rng.choice(("organic", "direct")))
        return
    if persona is Persona.LEAD:
        start = end - timedelta(days=rng.randint(1, 20))
        j.first_touch(start, visits=rng.randint(1, 2))
        if rng.random() < 0.2:
            j.ticket(between(rng, start, end - timedelta(hours=48)))
        j.signup(end)
        return
    start = end - min(history, at_risk - 2 * m) if persona in _ACTIVE else end - history
    if persona is Persona.REFUNDED:
        start = end - timedelta(days=rng.randint(1, 20))
        j.first_touch(start)
        j.signup(start + timedelta(hours=1))
        bought = between(rng, start + timedelta(hours=2), end - timedelta(hours=1))
        j.purchase(bought)
        j.refund(end, full=True)
        return
    if persona is Persona.CANCELLED:
        j.first_touch(start)
        j.signup(start + timedelta(hours=1))
        last = _purchases(j, start + timedelta(hours=2), end - DAY, rng.randint(1, 3))[-1]
        j.chatter(last, end - timedelta(hours=1), promoter=False)
        j.emit(end, "subscription_cancelled", None, subscription_id=f"{j.tag}-sub", reason="price")
        return
    if persona in _ACTIVE:
        count = {Persona.FIRST_TIME: 1, Persona.REPEAT: 2}.get(persona, rng.randint(3, 6))
        promoter = persona is Persona.LOYAL
        j.first_touch(start, visits=rng.randint(1, 3))
        if rng.random() < 0.7:
            j.signup(start + timedelta(hours=1))
        bought = end - timedelta(minutes=rng.randint(30, 3 * 24 * 60))
        last = _purchases(j, start + timedelta(hours=2), bought, count)[-1]
        if rng.random() < 0.1:
            j.refund(last + timedelta(hours=rng.randint(1, 20)), full=False)
        if promoter and rng.random() < 0.2:
            j.emit(between(rng, last, end), "referral", None, referred_id=f"{j.tag}-friend")
        j.chatter(last, end, promoter=promoter)
        j.email(end)
        return
    # The quiet ones: the last purchase lies one threshold back, plus up to ``recent``.
    threshold = at_risk if persona in (Persona.LAPSING, Persona.WON_BACK) else churned
    quiet = threshold + m + timedelta(seconds=rng.randint(0, int(recent.total_seconds())))
    last_purchase = as_of - quiet
    first = min(start, last_purchase - DAY)
    j.first_touch(first, visits=rng.randint(1, 3))
    if rng.random() < 0.7:
        j.signup(first + timedelta(hours=1))
    _purchases(j, first + timedelta(hours=2), last_purchase, rng.randint(1, 3))
    moved_at = last_purchase + threshold
    if persona is Persona.WON_BACK:
        j.purchase(between(rng, moved_at + m, as_of))
    elif rng.random() < 0.6:  # shows up again without buying: a win-back email opened
        j.email(between(rng, moved_at + m, as_of), campaign="win-back")


_ACTIVE = frozenset({Persona.FIRST_TIME, Persona.REPEAT, Persona.LOYAL})


def _spend(rng: random.Random, cfg: SimConfig, tag: str) -> list[dict[str, Any]]:
    """Daily spend per paid channel over the last ``spend_days`` (one campaign a day each)."""
    out = []
    day0 = cfg.as_of.replace(hour=0, minute=0, second=0, microsecond=0)
    daily = max(1.0, cfg.customers / 10)  # per channel: a CAC of tens of dollars
    for d in range(cfg.spend_days):
        start = day0 - d * DAY
        for channel, campaigns in CAMPAIGNS.items():
            amount = Decimal(str(round(rng.lognormvariate(math.log(daily), 0.4), 2)))
            out.append(
                {
                    "event_id": f"{tag}-spend-{channel}-{d}",
                    "type": "marketing_spend",
                    "occurred_at": iso(min(start + DAY, cfg.as_of)),
                    "source": cfg.source,
                    "properties": {
                        "channel": channel,
                        "campaign": rng.choice(campaigns),
                        "amount": str(amount),
                        "currency": "USD",
                        "period_start": iso(start),
                        "period_end": iso(start + DAY - timedelta(seconds=1)),
                    },
                }
            )
    return out


def simulate(cfg: SimConfig) -> Simulation:
    """``cfg.customers`` journeys (the first ones cover every persona once) plus spend."""
    rng = random.Random(cfg.seed)  # noqa: S311 - reproducible simulation, not secrets
    tag = f"{cfg.prefix}-{cfg.seed}"
    docs: list[dict[str, Any]] = []
    personas: dict[str, Persona] = {}
    order = list(Persona)
    for n in range(cfg.customers):
        persona = order[n] if n < len(order) else _pick(rng, cfg.mix)
        anonymous = persona is Persona.VISITOR
        cid = f"{tag}-{'a' if anonymous else 'c'}{n}"
        key = {"anonymous_id": cid} if anonymous else {"customer_id": cid}
        journey = _Journey(rng, cfg, key, cid, _pick(rng, CHANNEL_MIX))
        _journey(journey, persona, cfg)
        docs.extend(journey.docs)
        personas[cid] = persona
    docs.extend(_spend(rng, cfg, tag))
    docs.sort(key=lambda d: (d["occurred_at"], d["event_id"]))
    return Simulation(docs, personas, cfg.as_of)
