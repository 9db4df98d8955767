"""Generated customer journeys: valid contract-v1 events with a known shape (pure, seeded).

``generate(seed, customers=…, now=…)`` returns event documents (as a client would POST them),
each customer's events in time order: first touches (ad clicks, site visits, some anonymous
visitors who never identify), signups, purchases in several currencies, refunds, support
tickets with CSAT, reviews, NPS answers, referrals, cancellations, purchases after a
cancellation, and marketing spend reports per channel and campaign. The KPI truth of such a set
is recomputed by brute force in :mod:`.truth`; the persona simulator (:mod:`.personas`) is the
realistic sibling.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

CHANNELS = ("paid_search", "social", "email", "referral", "direct", "organic")
SOURCES = ("shop-eu", "shop-us", "app")
CAMPAIGNS = ("spring", "black-friday", "retarget")
_URL = "https://shop.example/"


@dataclass(frozen=True, slots=True)
class JourneyShape:
    """Probabilities of each step of a journey."""

    signup: float = 0.6
    purchase: float = 0.5
    more_purchases: float = 0.5
    refund: float = 0.15
    ticket: float = 0.3
    review: float = 0.3
    nps: float = 0.3
    referral: float = 0.15
    cancel: float = 0.15
    other_currency: float = 0.1
    anonymous: float = 0.15


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _amount(rng: random.Random) -> str:
    return str(Decimal(rng.randint(100, 50000)) / 100)


def generate(
    seed: int,
    *,
    customers: int,
    now: datetime,
    days: int = 100,
    shape: JourneyShape | None = None,
    spend_reports: int = 12,
) -> list[dict[str, Any]]:
    """Event documents of ``customers`` journeys spread over ``[now - days, now)``."""
    events = _Events(seed, now, timedelta(days=days), shape or JourneyShape())
    for n in range(customers):
        events.customer(n)
    for _ in range(spend_reports):
        events.spend_report()
    return events.out


class _Events:
    """The documents generated so far, numbered in the order they are made, and the one
    random stream every choice draws from (so a seed gives the same set)."""

    def __init__(self, seed: int, now: datetime, span: timedelta, shape: JourneyShape) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
        self.seed, self.now, self.span, self.shape = seed, now, span, shape
        self.out: list[dict[str, Any]] = []
        self.serial = 0

    def emit(
        self,
        type_: str,
        at: datetime,
        who: dict[str, str],
        source: str,
        ch: str | None,
        **props: Any,
    ) -> None:
        self.serial += 1
        doc: dict[str, Any] = {
            "event_id": f"j{self.seed}-{self.serial}",
            "type": type_,
            "occurred_at": _iso(at),
            "source": source,
            "properties": props,
            **who,
        }
        if ch is not None:
            doc["channel"] = ch
        self.out.append(doc)

    def customer(self, n: int) -> None:
        """Customer ``n``'s journey: anonymous visits only, or an identified journey."""
        rng, seconds = self.rng, int(self.span.total_seconds())
        at = self.now - self.span + timedelta(seconds=rng.randint(0, seconds - 3600))
        source = rng.choice(SOURCES)
        channel = rng.choice(CHANNELS)
        if rng.random() < self.shape.anonymous:
            who = {"anonymous_id": f"anon-{self.seed}-{n}"}
            _Journey(self, n, who, source, channel, at).anonymous_visits()
        else:
            who = {"customer_id": f"cust-{self.seed}-{n}"}
            _Journey(self, n, who, source, channel, at).identified()

    def spend_report(self) -> None:
        """A day of spend on one channel and campaign, reported an hour after it began."""
        rng = self.rng
        minutes = int(self.span.total_seconds() // 60)
        start = self.now - self.span + timedelta(minutes=rng.randint(0, minutes))
        channel = rng.choice(CHANNELS)
        self.emit(
            "marketing_spend",
            start + timedelta(hours=1),
            {},
            rng.choice(SOURCES),
            None,
            channel=channel,
            campaign=rng.choice(CAMPAIGNS),
            amount=_amount(rng),
            currency=rng.choice(["USD", "USD", "EUR"]),
            period_start=_iso(start),
            period_end=_iso(start + timedelta(days=1)),
        )


class _Journey:
    """One customer's journey: its events happen one after another from ``at``, each a random
    gap (up to six days) after the previous; nothing happens at or after ``now``."""

    def __init__(
        self,
        events: _Events,
        n: int,
        who: dict[str, str],
        source: str,
        channel: str,
        at: datetime,
    ) -> None:
        self.events, self.rng, self.shape = events, events.rng, events.shape
        self.n, self.who, self.source, self.channel, self.at = n, who, source, channel, at

    @property
    def live(self) -> bool:
        return self.at < self.events.now

    def emit(self, type_: str, ch: str | None, **props: Any) -> None:
        self.events.emit(type_, self.at, self.who, self.source, ch, **props)

    def advance(self) -> None:
        self.at += timedelta(seconds=self.rng.randint(30, 6 * 86400))

    def anonymous_visits(self) -> None:
        for _ in range(self.rng.randint(1, 3)):
            if not self.live:
                break
            self.emit("site_visit", self.channel, url=_URL)
            self.advance()

    def identified(self) -> None:
        """An ad click maybe, visits, a signup maybe, purchases maybe, then the extras."""
        rng = self.rng
        if rng.random() < 0.4:
            self.emit("ad_click", self.channel, campaign=rng.choice(CAMPAIGNS))
            self.advance()
        alive = self.visits()
        if alive and self.live and rng.random() < self.shape.signup:
            self.emit("signup", rng.choice([self.channel, "email"]), plan="free")
            self.advance()
        self.extras(self.purchases() if alive else 0)

    def visits(self) -> bool:
        """One to three visits; False when the journey reached ``now`` first."""
        for _ in range(self.rng.randint(1, 3)):
            if not self.live:
                return False
            self.emit("site_visit", self.rng.choice([self.channel, "direct"]), url=_URL)
            self.advance()
        return True

    def purchases(self) -> int:
        """Maybe one to five purchases (fewer when ``now`` comes first); how many were made."""
        rng, shape = self.rng, self.shape
        if rng.random() >= shape.purchase:
            return 0
        count = 1
        while rng.random() < shape.more_purchases and count < 5:
            count += 1
        made = 0
        for _ in range(count):
            if not self.live:
                break
            made += 1
            currency = "EUR" if rng.random() < shape.other_currency else "USD"
            self.purchase(rng.choice([self.channel, "email", None]), currency)
            self.advance()
        return made

    def purchase(self, ch: str | None, currency: str) -> None:
        order_id = f"o-{self.events.seed}-{self.events.serial}"
        self.emit("purchase", ch, order_id=order_id, amount=_amount(self.rng), currency=currency)

    def extras(self, purchases: int) -> None:
        """Each extra in turn, while the journey lasts. A ticket and an NPS answer come with
        their probability; the ones that follow a purchase come only after one, and then
        always: ``probability and purchases`` is the purchase count, which ``random()`` never
        reaches (the fixture data has been generated this way all along)."""
        shape = self.shape
        extras = [
            (self.refund, shape.refund and purchases),
            (self.ticket, shape.ticket),
            (self.review, shape.review and purchases),
            (self.nps_response, shape.nps),
            (self.referral, shape.referral and purchases),
            (self.cancel, shape.cancel and purchases),
        ]
        for extra, p in extras:
            if not p or self.rng.random() >= p or not self.live:
                continue
            extra(self.rng.choice([self.channel, None]))
            self.advance()

    def refund(self, ch: str | None) -> None:
        self.emit("refund", ch, order_id="o", amount=_amount(self.rng), currency="USD")

    def ticket(self, ch: str | None) -> None:
        """A ticket opened, and often solved (with a CSAT answer) a step later."""
        self.emit("support_ticket", ch, ticket_id=f"t{self.events.serial}", status="opened")
        self.advance()
        if self.live and self.rng.random() < 0.7:
            props: dict[str, Any] = {"ticket_id": f"t{self.events.serial}", "status": "solved"}
            if self.rng.random() < 0.8:
                props["csat"] = self.rng.randint(1, 5)
            self.emit("support_ticket", ch, **props)

    def review(self, ch: str | None) -> None:
        self.emit("review", ch, rating=self.rng.randint(1, 5))

    def nps_response(self, ch: str | None) -> None:
        self.emit("nps_response", ch, score=self.rng.randint(0, 10))

    def referral(self, ch: str | None) -> None:
        self.emit("referral", ch, referred_id=f"friend-{self.events.serial}")

    def cancel(self, ch: str | None) -> None:
        """A cancelled subscription; half of those who still have time come back and buy."""
        self.emit("subscription_cancelled", ch, subscription_id=f"sub-{self.n}")
        self.advance()
        if self.live and self.rng.random() < 0.5:
            self.purchase(ch, "USD")
