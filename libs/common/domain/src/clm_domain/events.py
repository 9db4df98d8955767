"""Event contract v1: the touchpoints websites and shops send, as validated pydantic models.

An inbound event is an envelope (``event_id``, ``type``, ids, ``occurred_at``, ``source``,
``channel``) plus ``properties`` typed per ``type`` (:mod:`clm_domain.event_properties`, over
the field types of :mod:`clm_domain.event_fields`). :func:`parse_event` validates a JSON-like
mapping and raises :class:`pydantic.ValidationError` whose locations name the offending field
(``properties.amount``). Unknown properties are kept. Money is a decimal string on the wire.

Published on ``clm.events.v1`` as :class:`Event` JSON (``model_dump(mode="json")``), with
``schema_version`` and ``source`` headers; the key is the customer key (:func:`partition_key`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from clm_domain import bounds
from clm_domain.event_examples import EXAMPLE_PROPERTIES, example_event
from clm_domain.event_fields import (
    BOUNDS_ERROR,
    INBOUND,
    MAX_EXTRA_PROPERTIES_BYTES,
    MAX_ITEMS_BYTES,
    MAX_TRAITS_BYTES,
    TEXT_PATTERN,
    EventContext,
    EventTime,
    Id,
    Label,
    Money,
    Sealed,
    check_text,
    event_time,
    is_inbound,
    is_stored,
)
from clm_domain.event_properties import (
    AdClickProperties,
    ConsentProperties,
    CustomProperties,
    EmailEngagementProperties,
    EventType,
    IdentifyProperties,
    MarketingSpendProperties,
    NpsResponseProperties,
    Properties,
    PurchaseProperties,
    ReferralProperties,
    RefundProperties,
    ReviewProperties,
    SignupProperties,
    SiteVisitProperties,
    SubscriptionCancelledProperties,
    SupportTicketProperties,
)

__all__ = [
    "BOUNDS_ERROR",
    "ENVELOPE_ID_FIELDS",
    "ENVELOPE_LABEL_FIELDS",
    "EVENTS_ADAPTER",
    "EVENT_ADAPTER",
    "EVENT_TYPES",
    "EXAMPLE_PROPERTIES",
    "MAX_EXTRA_PROPERTIES_BYTES",
    "MAX_FUTURE_SKEW",
    "MAX_ITEMS_BYTES",
    "MAX_TRAITS_BYTES",
    "MISSING_CUSTOMER_KEY",
    "SCHEMA_VERSION",
    "SEALED_BY_CLIENT",
    "TEXT_PATTERN",
    "AdClick",
    "AdClickProperties",
    "Consent",
    "ConsentProperties",
    "Custom",
    "CustomProperties",
    "EmailEngagement",
    "EmailEngagementProperties",
    "Event",
    "EventBase",
    "EventContext",
    "EventTime",
    "EventType",
    "Id",
    "Identify",
    "IdentifyProperties",
    "Label",
    "MarketingSpend",
    "MarketingSpendProperties",
    "Money",
    "NpsResponse",
    "NpsResponseProperties",
    "Properties",
    "Purchase",
    "PurchaseProperties",
    "Referral",
    "ReferralProperties",
    "Refund",
    "RefundProperties",
    "Review",
    "ReviewProperties",
    "Sealed",
    "Signup",
    "SignupProperties",
    "SiteVisit",
    "SiteVisitProperties",
    "SubscriptionCancelled",
    "SubscriptionCancelledProperties",
    "SupportTicket",
    "SupportTicketProperties",
    "dump_event",
    "error_field",
    "example_event",
    "json_schema",
    "parse_event",
    "parse_event_json",
    "parse_events",
    "parse_stored_event_json",
    "partition_key",
    "record_headers",
]

SCHEMA_VERSION = 1
MAX_FUTURE_SKEW = timedelta(hours=24)
MISSING_CUSTOMER_KEY = "missing_customer_key"
SEALED_BY_CLIENT = "sealed_by_client"


ENVELOPE_ID_FIELDS = ("event_id", "customer_id", "anonymous_id")
ENVELOPE_LABEL_FIELDS = ("source", "channel")


class EventBase(BaseModel):
    """The envelope every event shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Id = Field(description="Client-chosen idempotency key, unique per source.")
    customer_id: Id | None = None
    anonymous_id: Id | None = None
    occurred_at: AwareDatetime = Field(
        description="When it happened (RFC 3339 with offset; kept in UTC)."
    )
    source: Label = Field(description="Which site or shop sent it; set from the write key.")
    channel: Label | None = Field(
        default=None, description="paid_search, social, email, referral, direct, organic, …"
    )
    context: EventContext | None = Field(
        default=None, description="The request's IP address and user agent (personal data)."
    )
    sealed: Sealed | None = Field(
        default=None,
        description="The event's personal fields, encrypted by the ingest under the customer's "
        "data key. Set by the ingest only: refused in an event a client sends.",
    )

    @field_validator("sealed")
    @classmethod
    def _sealed_by_ingest(cls, value: Sealed | None, info: ValidationInfo) -> Sealed | None:
        if value is not None and is_inbound(info):
            raise PydanticCustomError(SEALED_BY_CLIENT, "is set by the ingest, not by clients")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _not_far_future(cls, value: datetime, info: ValidationInfo) -> datetime:
        value = event_time(value, info)  # in UTC, within the bounds
        now = (info.context or {}).get("now")
        if isinstance(now, datetime) and value > now + MAX_FUTURE_SKEW:
            raise ValueError("is more than 24h in the future")
        return value

    @model_validator(mode="after")
    def _customer_key_present(self, info: ValidationInfo) -> EventBase:
        """A customer key, and (new events) the bounds of the envelope's ids and labels."""
        if not is_stored(info):
            check_text(self, ENVELOPE_ID_FIELDS, ENVELOPE_LABEL_FIELDS)
        if (
            self.customer_id is None
            and self.anonymous_id is None
            and getattr(self, "type", None) != EventType.MARKETING_SPEND
        ):
            raise PydanticCustomError(
                MISSING_CUSTOMER_KEY, "customer_id or anonymous_id is required"
            )
        return self


class AdClick(EventBase):
    type: Literal["ad_click"]
    properties: AdClickProperties


class SiteVisit(EventBase):
    type: Literal["site_visit"]
    properties: SiteVisitProperties


class Signup(EventBase):
    type: Literal["signup"]
    properties: SignupProperties = Field(default_factory=SignupProperties)


class Identify(EventBase):
    type: Literal["identify"]
    properties: IdentifyProperties = Field(default_factory=IdentifyProperties)


class Purchase(EventBase):
    type: Literal["purchase"]
    properties: PurchaseProperties


class Refund(EventBase):
    type: Literal["refund"]
    properties: RefundProperties


class SubscriptionCancelled(EventBase):
    type: Literal["subscription_cancelled"]
    properties: SubscriptionCancelledProperties = Field(
        default_factory=SubscriptionCancelledProperties
    )


class SupportTicket(EventBase):
    type: Literal["support_ticket"]
    properties: SupportTicketProperties


class Review(EventBase):
    type: Literal["review"]
    properties: ReviewProperties


class NpsResponse(EventBase):
    type: Literal["nps_response"]
    properties: NpsResponseProperties


class Referral(EventBase):
    type: Literal["referral"]
    properties: ReferralProperties


class EmailEngagement(EventBase):
    type: Literal["email_engagement"]
    properties: EmailEngagementProperties


class MarketingSpend(EventBase):
    type: Literal["marketing_spend"]
    properties: MarketingSpendProperties


class Custom(EventBase):
    type: Literal["custom"]
    properties: CustomProperties


class Consent(EventBase):
    type: Literal["consent"]
    properties: ConsentProperties


Event = Annotated[
    AdClick
    | SiteVisit
    | Signup
    | Identify
    | Purchase
    | Refund
    | SubscriptionCancelled
    | SupportTicket
    | Review
    | NpsResponse
    | Referral
    | EmailEngagement
    | MarketingSpend
    | Custom
    | Consent,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


EVENTS_ADAPTER: TypeAdapter[list[Event]] = TypeAdapter(list[Event])


def parse_events(data: list[Any], *, now: datetime | None = None) -> list[Event]:
    """Validate many events in one call (errors' locations start with the index)."""
    return EVENTS_ADAPTER.validate_python(data, context={"now": now, INBOUND: True})


def parse_event(data: Any, *, now: datetime | None = None) -> Event:
    """Validate a decoded JSON document as an event a client sent (``now`` bounds future
    timestamps)."""
    return EVENT_ADAPTER.validate_python(data, context={"now": now, INBOUND: True})


def parse_event_json(raw: bytes) -> Event:
    """Decode an event as published on the events topic."""
    return EVENT_ADAPTER.validate_json(raw)


_STORED_CONTEXT = {bounds.STORED: True}


def parse_stored_event_json(raw: bytes) -> Event:
    """Decode an event the engine stored itself (a customer's history, refolded): the bounds
    of new events are not asked again, so an event stored before them still reads back."""
    return EVENT_ADAPTER.validate_json(raw, context=_STORED_CONTEXT)


def dump_event(event: Event) -> bytes:
    """The wire form of an event on the events topic (JSON, decimals as strings).

    Serialized by the event's own model: what the union's serializer picks anyway, without
    its dispatch (see docs/performance.md).
    """
    return event.__pydantic_serializer__.to_json(event, exclude_none=True)


def record_headers(event: Event) -> list[tuple[str, bytes]]:
    """Headers of an event's record on the events topic: schema version, source, type."""
    return [
        ("schema_version", str(SCHEMA_VERSION).encode()),
        ("source", event.source.encode()),
        ("type", event.type.encode()),
    ]


def partition_key(event: Event) -> str:
    """Kafka key: the customer id, else the anonymous id, else (spend) the channel."""
    if event.customer_id is not None:
        return event.customer_id
    if event.anonymous_id is not None:
        return event.anonymous_id
    if isinstance(event, MarketingSpend):
        return f"spend:{event.properties.channel}"
    return event.event_id


def error_field(
    loc: tuple[int | str, ...], error_type: str, ctx: dict[str, Any] | None = None
) -> str:
    """The dotted field name an error from :func:`parse_event` is about.

    Drops the discriminator tag pydantic puts first (``purchase.properties.amount`` →
    ``properties.amount``) and names the envelope fields of envelope-wide errors.
    """
    if error_type == MISSING_CUSTOMER_KEY:
        return "customer_id"
    if error_type in {"union_tag_invalid", "union_tag_not_found"}:
        return "type"
    parts = [str(p) for p in loc]
    if parts and parts[0] in EVENT_TYPES:
        parts = parts[1:]
    if error_type == BOUNDS_ERROR and ctx is not None:  # raised by the model: names its field
        parts.append(str(ctx["field"]))
    return ".".join(parts) or "body"


EVENT_TYPES: frozenset[str] = frozenset(t.value for t in EventType)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the event contract (for the docs)."""
    return EVENT_ADAPTER.json_schema()
