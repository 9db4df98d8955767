"""Consent per purpose: what a customer's ``consent`` events leave, and what marketing may do.

A ``consent`` event records, as of its ``occurred_at``, that the customer gave (``granted``)
or withdrew consent for one purpose (``analytics`` or ``marketing``). Per customer and
purpose the latest one in event order wins (time, then source and event id on a tie), so an
older event arriving late changes nothing and a redelivery neither.

Marketing is opt-out: a customer with no marketing consent recorded may be contacted; one
whose latest marketing consent is withdrawn may not (its stage changes and segment entries
are not sent to marketing webhooks, and marketing segment exports leave it out). Consent is
not a touchpoint: it changes no lifecycle fact (no stage, no last activity).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from clm_domain.events import Consent

Purpose = Literal["analytics", "marketing"]
PURPOSES: tuple[Purpose, ...] = get_args(Purpose)
MARKETING: Purpose = "marketing"

#: Why a marketing export left customers out (the key of its ``excluded`` counts).
WITHDRAWN = "marketing_consent_withdrawn"


@dataclass(frozen=True, slots=True)
class ConsentGiven:
    """A customer's latest consent for one purpose."""

    granted: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class ConsentRow:
    """A consent event as stored: whose (the customer it landed on), which purpose, given or
    withdrawn, when, and which event said so."""

    customer_id: str
    purpose: Purpose
    granted: bool
    at: datetime
    source: str
    event_id: str

    def order(self) -> tuple[datetime, str, str]:
        return (self.at, self.source, self.event_id)


def latest_consents(landed: Iterable[tuple[str, Consent]]) -> list[ConsentRow]:
    """The latest consent per customer and purpose among ``landed`` (the customer each event
    lands on, the event), in (customer, purpose) order."""
    best: dict[tuple[str, str], ConsentRow] = {}
    for key, event in landed:
        row = ConsentRow(
            key,
            event.properties.purpose,
            event.properties.granted,
            event.occurred_at,
            event.source,
            event.event_id,
        )
        seen = best.get((key, row.purpose))
        if seen is None or row.order() > seen.order():
            best[(key, row.purpose)] = row
    return [best[k] for k in sorted(best)]


def marketing_decision(consent: Mapping[str, ConsentGiven]) -> tuple[bool, str]:
    """Whether marketing may reach the customer, and why."""
    given = consent.get(MARKETING)
    if given is None:
        return True, "no marketing consent recorded (opt-out default: allowed until withdrawn)"
    if given.granted:
        return True, f"marketing consent granted at {given.at.isoformat()}"
    return False, f"marketing consent withdrawn at {given.at.isoformat()}"


def consent_doc(consent: Mapping[str, ConsentGiven]) -> dict[str, Any]:
    """The read API's ``consent`` (per purpose: granted and when, or null) and ``marketing``
    (allowed, and the reason)."""
    allowed, reason = marketing_decision(consent)
    return {
        "consent": {
            purpose: (
                None
                if (given := consent.get(purpose)) is None
                else {"granted": given.granted, "at": given.at.isoformat()}
            )
            for purpose in PURPOSES
        },
        "marketing": {"allowed": allowed, "reason": reason},
    }
