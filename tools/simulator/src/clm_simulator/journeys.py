"""Generated customer journeys: valid contract-v1 events with a known shape (pure, seeded).

``generate(seed, customers=…, now=…)`` returns event documents (as a client would POST them),
each customer's events in time order: first touches (ad clicks, site visits, some anonymous
visitors who never identify), signups, purchases in several currencies, refunds, support
tickets with CSAT, reviews, NPS answers, referrals, cancellations, purchases after a
cancellation, and marketing spend reports per channel and campaign. The KPI truth of such a set
is recomputed by brute force in ``tests/kpi_truth.py``; the journey simulator builds on this.
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
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    shape = shape or JourneyShape()
    out: list[dict[str, Any]] = []
    serial = 0

    def emit(
        type_: str, at: datetime, who: dict[str, str], source: str, ch: str | None, **props: Any
    ) -> None:
        nonlocal serial
        serial += 1
        doc: dict[str, Any] = {
            "event_id": f"j{seed}-{serial}",
            "type": type_,
            "occurred_at": _iso(at),
            "source": source,
            "properties": props,
            **who,
        }
        if ch is not None:
            doc["channel"] = ch
        out.append(doc)

    span = timedelta(days=days)
    for n in range(customers):
        at = now - span + timedelta(seconds=rng.randint(0, int(span.total_seconds()) - 3600))
        source = rng.choice(SOURCES)
        channel = rng.choice(CHANNELS)

        def step(at: datetime) -> datetime:
            return at + timedelta(seconds=rng.randint(30, 6 * 86400))

        if rng.random() < shape.anonymous:
            who = {"anonymous_id": f"anon-{seed}-{n}"}
            for _ in range(rng.randint(1, 3)):
                if at >= now:
                    break
                emit("site_visit", at, who, source, channel, url="https://shop.example/")
                at = step(at)
            continue
        who = {"customer_id": f"cust-{seed}-{n}"}
        if rng.random() < 0.4:
            emit("ad_click", at, who, source, channel, campaign=rng.choice(CAMPAIGNS))
            at = step(at)
        alive = True

        def live(t: datetime) -> bool:
            return t < now

        for _ in range(rng.randint(1, 3)):
            if not live(at):
                alive = False
                break
            emit(
                "site_visit",
                at,
                who,
                source,
                rng.choice([channel, "direct"]),
                url="https://shop.example/",
            )
            at = step(at)
        if alive and live(at) and rng.random() < shape.signup:
            emit("signup", at, who, source, rng.choice([channel, "email"]), plan="free")
            at = step(at)
        purchases = 0
        if alive and rng.random() < shape.purchase:
            count = 1
            while rng.random() < shape.more_purchases and count < 5:
                count += 1
            for _ in range(count):
                if not live(at):
                    break
                purchases += 1
                currency = "EUR" if rng.random() < shape.other_currency else "USD"
                emit(
                    "purchase",
                    at,
                    who,
                    source,
                    rng.choice([channel, "email", None]),
                    order_id=f"o-{seed}-{serial}",
                    amount=_amount(rng),
                    currency=currency,
                )
                at = step(at)
        extras = [
            ("refund", shape.refund and purchases),
            ("support_ticket", shape.ticket),
            ("review", shape.review and purchases),
            ("nps_response", shape.nps),
            ("referral", shape.referral and purchases),
            ("subscription_cancelled", shape.cancel and purchases),
        ]
        for type_, p in extras:
            if not p or rng.random() >= p or not live(at):
                continue
            ch = rng.choice([channel, None])
            if type_ == "refund":
                emit(type_, at, who, source, ch, order_id="o", amount=_amount(rng), currency="USD")
            elif type_ == "support_ticket":
                emit(type_, at, who, source, ch, ticket_id=f"t{serial}", status="opened")
                at = step(at)
                if live(at) and rng.random() < 0.7:
                    props: dict[str, Any] = {"ticket_id": f"t{serial}", "status": "solved"}
                    if rng.random() < 0.8:
                        props["csat"] = rng.randint(1, 5)
                    emit(type_, at, who, source, ch, **props)
            elif type_ == "review":
                emit(type_, at, who, source, ch, rating=rng.randint(1, 5))
            elif type_ == "nps_response":
                emit(type_, at, who, source, ch, score=rng.randint(0, 10))
            elif type_ == "referral":
                emit(type_, at, who, source, ch, referred_id=f"friend-{serial}")
            else:
                emit(type_, at, who, source, ch, subscription_id=f"sub-{n}")
                at = step(at)
                if live(at) and rng.random() < 0.5:  # comes back and buys
                    emit(
                        "purchase",
                        at,
                        who,
                        source,
                        ch,
                        order_id=f"o-{seed}-{serial}",
                        amount=_amount(rng),
                        currency="USD",
                    )
            at = step(at)
    for _ in range(spend_reports):
        start = now - span + timedelta(minutes=rng.randint(0, int(span.total_seconds() // 60)))
        channel = rng.choice(CHANNELS)
        emit(
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
    return out
