"""One customer's events, built from blocks the persona scripts of :mod:`.personas` combine:
a first touch (an ad click on paid channels, site visits), a signup, purchases with log-normal
order values in the customer's currency, refunds, support tickets with CSAT, emails, and the
chatter after a purchase (tickets, reviews, NPS answers)."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clm_simulator.personas import SimConfig

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


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def pick(rng: random.Random, weights: Mapping[Any, float]) -> Any:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


class Journey:
    """One customer's events, emitted in any order and sorted at the end."""

    def __init__(
        self, rng: random.Random, cfg: SimConfig, key: dict[str, str], tag: str, channel: str
    ) -> None:
        self.rng, self.cfg, self.key, self.tag, self.channel = rng, cfg, key, tag, channel
        self.docs: list[dict[str, Any]] = []
        self.currency: str = pick(rng, CURRENCIES)
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


def purchases(j: Journey, start: datetime, end: datetime, count: int) -> list[datetime]:
    """``count`` purchases in ``[start, end]``, the last one at ``end``; their times."""
    times = [*sorted(between(j.rng, start, end) for _ in range(count - 1)), end]
    for at in times:
        j.purchase(at)
    return times
