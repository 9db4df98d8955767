"""Which fields of an event are personal data: the one declarative table of the contract.

Personal fields leave the ingest encrypted under their customer's data key (the event's
``sealed`` part, see :mod:`clm_infra.privacy`); everything else stays in clear, and is all
the stage engine and the metrics service read. Erasing a customer deletes its key, and with
it every copy of its personal fields (the events topic, its mirrors and backups, the stored
event log).

What is clear is what the lifecycle and the KPIs need: types, ids, times, amounts,
currencies, channels, campaigns, plans, statuses and scores. What is personal is what names,
reaches or describes a person, or could: traits, e-mail hashes, the request's IP address and
user agent, URLs (query strings carry e-mail addresses and tokens), the free text of reviews
and cancellations, a purchase's items. A property the contract does not know is personal:
we cannot tell what a client put there.

Pure: takes the part to seal out of an event's document (``take_personal``) and puts an
opened part back (``reveal``); the cipher is the caller's.
"""

from __future__ import annotations

from typing import Any, Final

#: The envelope's personal fields (every type).
ENVELOPE_PERSONAL: Final = ("context",)

#: Per event type: its personal ``properties`` fields. A field not listed is clear, except
#: the unknown properties a client adds (kept as they came), which are all personal.
PERSONAL: Final[dict[str, tuple[str, ...]]] = {
    "ad_click": (),
    "site_visit": ("url", "referrer"),
    "signup": ("email_hash",),
    "identify": ("traits",),
    "purchase": ("items",),
    "refund": (),
    "subscription_cancelled": ("reason",),
    "support_ticket": (),
    "review": ("text",),
    "nps_response": (),
    "referral": (),
    "email_engagement": (),
    "marketing_spend": (),
    "custom": (),
    "consent": (),
}

#: The types about no one (marketing spend): nothing of theirs is sealed, unknown properties
#: included.
ABOUT_NO_ONE: Final = frozenset({"marketing_spend"})

#: Per event type: its clear ``properties`` fields (what stages and KPIs read).
CLEAR: Final[dict[str, tuple[str, ...]]] = {
    "ad_click": ("campaign", "ad", "creative"),
    "site_visit": (),
    "signup": ("plan",),
    "identify": (),
    "purchase": ("order_id", "amount", "currency"),
    "refund": ("order_id", "amount", "currency"),
    "subscription_cancelled": ("subscription_id",),
    "support_ticket": ("ticket_id", "status", "csat"),
    "review": ("rating",),
    "nps_response": ("score",),
    "referral": ("referred_id",),
    "email_engagement": ("action", "campaign"),
    "marketing_spend": (
        "channel",
        "campaign",
        "amount",
        "currency",
        "period_start",
        "period_end",
    ),
    "custom": ("name",),
    "consent": ("purpose", "granted"),
}

#: The envelope's clear fields.
ENVELOPE_CLEAR: Final = (
    "event_id",
    "type",
    "customer_id",
    "anonymous_id",
    "occurred_at",
    "source",
    "channel",
)


_CLEAR_SETS: Final = {kind: frozenset(fields) for kind, fields in CLEAR.items()}
_ENVELOPE_SET: Final = frozenset(ENVELOPE_PERSONAL)


def take_personal(doc: dict[str, Any]) -> dict[str, Any] | None:
    """Move the personal fields out of the event document ``doc`` (its JSON form, without
    nulls) and return them as a document of their own; None when it has none (``doc`` is
    then untouched). A property is personal unless the table says it is clear."""
    kind = doc["type"]
    if kind in ABOUT_NO_ONE:
        return None
    part: dict[str, Any] = {}
    for name in _ENVELOPE_SET.intersection(doc):
        part[name] = doc.pop(name)
    properties = doc.get("properties")
    if properties:
        clear = _CLEAR_SETS[kind]
        personal = [name for name in properties if name not in clear]
        if personal:
            part["properties"] = {name: properties.pop(name) for name in personal}
    return part or None


def reveal(doc: dict[str, Any], personal: dict[str, Any]) -> dict[str, Any]:
    """The event document ``doc`` (clear fields) with its opened personal part put back."""
    out = {**doc, **{k: v for k, v in personal.items() if k != "properties"}}
    if "properties" in personal:
        out["properties"] = {**doc.get("properties", {}), **personal["properties"]}
    return out


def _names(fields: tuple[str, ...]) -> str:
    return ", ".join(f"`{f}`" for f in fields)


def classification_table() -> str:
    """The classification as the Markdown table the README shows (a test keeps it equal)."""
    rows = [
        "| type | personal: sealed | clear |",
        "|---|---|---|",
        f"| envelope, every type | {_names(ENVELOPE_PERSONAL)} | {_names(ENVELOPE_CLEAR)} |",
    ]
    for kind, fields in PERSONAL.items():
        if kind in ABOUT_NO_ONE:
            sealed = "none (about no one)"
        else:
            sealed = ", ".join([*(f"`{f}`" for f in fields), "unknown properties"])
        rows.append(f"| `{kind}` | {sealed} | {_names(CLEAR[kind]) or '—'} |")
    return "\n".join(rows)
