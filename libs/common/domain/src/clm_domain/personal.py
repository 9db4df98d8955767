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

Pure: finds an event's personal fields (``personal_fields``), makes the part to seal
(``personal_part``) and puts an opened part back (``reveal``); the cipher is the caller's.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel

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


#: An event's personal fields: those of the envelope, those of its properties.
Found = tuple[list[str], list[str]]


def personal_fields(event: BaseModel) -> Found:
    """The personal envelope fields and ``properties`` fields ``event`` carries (set, not
    None), unknown properties included; none for a type about no one."""
    kind: str = getattr(event, "type")  # noqa: B009 (every event has one)
    if kind in ABOUT_NO_ONE:
        return [], []
    envelope = [name for name in ENVELOPE_PERSONAL if getattr(event, name) is not None]
    properties: BaseModel = getattr(event, "properties")  # noqa: B009
    fields = [name for name in PERSONAL[kind] if getattr(properties, name) is not None]
    extra = properties.__pydantic_extra__
    if extra:
        fields.extend(extra)
    return envelope, fields


def personal_part(event: BaseModel, found: Found) -> dict[str, Any]:
    """The event's personal fields as a JSON-ready document (what is sealed). The values are
    as they came: free-form JSON, or text; the envelope's ``context`` is dumped."""
    envelope, fields = found
    part: dict[str, Any] = {
        name: getattr(event, name).model_dump(mode="json", exclude_none=True) for name in envelope
    }
    if fields:
        properties: BaseModel = getattr(event, "properties")  # noqa: B009
        extra = properties.__pydantic_extra__ or {}
        part["properties"] = {
            name: extra[name] if name in extra else getattr(properties, name) for name in fields
        }
    return part


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
