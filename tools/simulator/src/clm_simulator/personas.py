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
from clm_simulator.customer_events import (
    CAMPAIGNS,
    DAY,
    Journey,
    between,
    iso,
    pick,
    purchases,
)


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


@dataclass(frozen=True, slots=True)
class _Timeline:
    """A journey's time frame: ``end`` is its latest activity (within ``recent`` of
    ``as_of``), ``history`` how far back before it the journey may begin."""

    cfg: SimConfig
    end: datetime
    history: timedelta
    recent: timedelta

    @property
    def at_risk(self) -> timedelta:
        return timedelta(days=self.cfg.at_risk_days)

    @property
    def churned(self) -> timedelta:
        return timedelta(days=self.cfg.churned_days)


def _timeline(rng: random.Random, cfg: SimConfig) -> _Timeline:
    at_risk = timedelta(days=cfg.at_risk_days)
    recent = min(cfg.recent, at_risk - 2 * cfg.margin - DAY)
    end = cfg.as_of - timedelta(seconds=rng.randint(0, int(recent.total_seconds())))
    history = timedelta(days=rng.randint(20, max(21, cfg.history_days)))
    return _Timeline(cfg, end, history, recent)


def _journey(j: Journey, persona: Persona, cfg: SimConfig) -> None:
    """The customer's events, scripted to leave it in the persona's intended stage."""
    t = _timeline(j.rng, cfg)
    if persona is Persona.VISITOR:
        _visitor(j, t)
    elif persona is Persona.LEAD:
        _lead(j, t)
    elif persona is Persona.REFUNDED:
        _refunded(j, t)
    elif persona is Persona.CANCELLED:
        _cancelled(j, t)
    elif persona in _ACTIVE:
        _active(j, persona, t)
    else:
        _quiet(j, persona, t)


def _visitor(j: Journey, t: _Timeline) -> None:
    """A first touch (and maybe one more visit); never identified."""
    rng = j.rng
    visits = rng.randint(0, 1) if j.channel in CAMPAIGNS else 1
    j.first_touch(t.end - timedelta(minutes=rng.randint(1, 600)), visits=visits)
    if rng.random() < 0.3:
        j.visit(t.end, rng.choice(("organic", "direct")))


def _lead(j: Journey, t: _Timeline) -> None:
    """Visits over a few weeks, maybe a ticket, a signup: never a purchase."""
    rng, end = j.rng, t.end
    start = end - timedelta(days=rng.randint(1, 20))
    j.first_touch(start, visits=rng.randint(1, 2))
    if rng.random() < 0.2:
        j.ticket(between(rng, start, end - timedelta(hours=48)))
    j.signup(end)


def _refunded(j: Journey, t: _Timeline) -> None:
    """Signs up, buys once, and gets that order refunded in full."""
    rng, end = j.rng, t.end
    start = end - timedelta(days=rng.randint(1, 20))
    j.first_touch(start)
    j.signup(start + timedelta(hours=1))
    bought = between(rng, start + timedelta(hours=2), end - timedelta(hours=1))
    j.purchase(bought)
    j.refund(end, full=True)


def _cancelled(j: Journey, t: _Timeline) -> None:
    """Buys one to three times, then cancels the subscription."""
    rng, end = j.rng, t.end
    start = end - t.history
    j.first_touch(start)
    j.signup(start + timedelta(hours=1))
    last = purchases(j, start + timedelta(hours=2), end - DAY, rng.randint(1, 3))[-1]
    j.chatter(last, end - timedelta(hours=1), promoter=False)
    j.emit(end, "subscription_cancelled", None, subscription_id=f"{j.tag}-sub", reason="price")


def _active(j: Journey, persona: Persona, t: _Timeline) -> None:
    """First-time, repeat and loyal buyers: recent purchases, within the at-risk threshold."""
    rng, end = j.rng, t.end
    start = end - min(t.history, t.at_risk - 2 * t.cfg.margin)
    count = {Persona.FIRST_TIME: 1, Persona.REPEAT: 2}.get(persona, rng.randint(3, 6))
    promoter = persona is Persona.LOYAL
    j.first_touch(start, visits=rng.randint(1, 3))
    if rng.random() < 0.7:
        j.signup(start + timedelta(hours=1))
    bought = end - timedelta(minutes=rng.randint(30, 3 * 24 * 60))
    last = purchases(j, start + timedelta(hours=2), bought, count)[-1]
    if rng.random() < 0.1:
        j.refund(last + timedelta(hours=rng.randint(1, 20)), full=False)
    if promoter and rng.random() < 0.2:
        j.emit(between(rng, last, end), "referral", None, referred_id=f"{j.tag}-friend")
    j.chatter(last, end, promoter=promoter)
    j.email(end)


def _quiet(j: Journey, persona: Persona, t: _Timeline) -> None:
    """The quiet ones: the last purchase lies one threshold back, plus up to ``recent``."""
    rng, as_of, m = j.rng, t.cfg.as_of, t.cfg.margin
    start = t.end - t.history
    threshold = t.at_risk if persona in (Persona.LAPSING, Persona.WON_BACK) else t.churned
    quiet = threshold + m + timedelta(seconds=rng.randint(0, int(t.recent.total_seconds())))
    last_purchase = as_of - quiet
    first = min(start, last_purchase - DAY)
    j.first_touch(first, visits=rng.randint(1, 3))
    if rng.random() < 0.7:
        j.signup(first + timedelta(hours=1))
    purchases(j, first + timedelta(hours=2), last_purchase, rng.randint(1, 3))
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
        persona = order[n] if n < len(order) else pick(rng, cfg.mix)
        anonymous = persona is Persona.VISITOR
        cid = f"{tag}-{'a' if anonymous else 'c'}{n}"
        key = {"anonymous_id": cid} if anonymous else {"customer_id": cid}
        journey = Journey(rng, cfg, key, cid, pick(rng, CHANNEL_MIX))
        _journey(journey, persona, cfg)
        docs.extend(journey.docs)
        personas[cid] = persona
    docs.extend(_spend(rng, cfg, tag))
    docs.sort(key=lambda d: (d["occurred_at"], d["event_id"]))
    return Simulation(docs, personas, cfg.as_of)
