"""Event contract v1: the touchpoints websites and shops send, as validated pydantic models.

An inbound event is an envelope (``event_id``, ``type``, ids, ``occurred_at``, ``source``,
``channel``) plus ``properties`` typed per ``type``. :func:`parse_event` validates a JSON-like
mapping and raises :class:`pydantic.ValidationError` whose locations name the offending field
(``properties.amount``). Unknown properties are kept. Money is a decimal string on the wire.

Published on ``clm.events.v1`` as :class:`Event` JSON (``model_dump(mode="json")``), with
``schema_version`` and ``source`` headers; the key is the customer key (:func:`partition_key`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from clm_domain import bounds
from clm_domain.currencies import ISO_4217

SCHEMA_VERSION = 1
MAX_FUTURE_SKEW = timedelta(hours=24)
MISSING_CUSTOMER_KEY = "missing_customer_key"
MAX_EXTRA_PROPERTIES_BYTES = 16 * 1024  # unknown properties are kept, up to this much JSON
MAX_TRAITS_BYTES = 16 * 1024  # an identify's traits, as JSON
MAX_ITEMS_BYTES = 64 * 1024  # a purchase's items, as JSON


def _stored(info: ValidationInfo) -> bool:
    """Whether this is an event read back from the engine's store (see bounds.STORED)."""
    context = info.context
    return context is not None and context.get(bounds.STORED) is True


#: The error type of a new event's id or label breaking the bounds; ``ctx["field"]`` names it.
BOUNDS_ERROR = "bounds"


def _check_text(model: BaseModel, ids: tuple[str, ...], labels: tuple[str, ...]) -> None:
    """The bounds of new events on the listed id and label fields of ``model``."""
    for name in ids:
        value = getattr(model, name)
        if value is not None and not bounds.is_id(value):
            _refuse(name, bounds.check_id, value)
    for name in labels:
        value = getattr(model, name)
        if value is not None and not bounds.is_label(value):
            _refuse(name, bounds.check_label, value)


def _refuse(name: str, check: Callable[[str], str], value: str) -> None:
    try:
        check(value)
    except ValueError as exc:
        raise PydanticCustomError(BOUNDS_ERROR, "{field}: " + str(exc), {"field": name}) from None


def _event_time(value: datetime, info: ValidationInfo) -> datetime:
    return bounds.as_utc(value) if _stored(info) else bounds.utc_time(value)


#: Ids and labels: see :mod:`clm_domain.bounds` (Postgres text cannot even hold a NUL; an id
#: is one path segment of ``/v1/customers/{id}``). The field constraint is what every stored
#: event meets; the stricter rules of new events (the schema's pattern) are checked by each
#: model's validator, for the fields it lists in ``ID_FIELDS`` and ``LABEL_FIELDS`` (one
#: Python call a model, not one a field: the engine decodes every event).
TEXT_PATTERN = bounds.TEXT_PATTERN
Id = Annotated[
    str,
    Field(
        min_length=1,
        max_length=bounds.MAX_ID_LENGTH,
        pattern=bounds.STORED_TEXT_PATTERN,
        json_schema_extra={"pattern": bounds.ID_PATTERN},
    ),
]
Label = Annotated[
    str,
    Field(
        min_length=1,
        max_length=bounds.MAX_LABEL_LENGTH,
        pattern=bounds.STORED_TEXT_PATTERN,
        json_schema_extra={"pattern": TEXT_PATTERN},
    ),
]
Money = Annotated[
    Decimal,
    Field(
        ge=0,
        le=bounds.MONEY_MAX,
        max_digits=bounds.MONEY_DIGITS,
        decimal_places=bounds.MONEY_PLACES,
        allow_inf_nan=False,
    ),
    PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json"),
]
#: A timestamp with its offset, normalised to UTC, within the bounds (see bounds.utc_time).
EventTime = Annotated[AwareDatetime, AfterValidator(_event_time)]


class EventType(StrEnum):
    """The touchpoint types of contract v1."""

    AD_CLICK = "ad_click"
    SITE_VISIT = "site_visit"
    SIGNUP = "signup"
    IDENTIFY = "identify"
    PURCHASE = "purchase"
    REFUND = "refund"
    SUBSCRIPTION_CANCELLED = "subscription_cancelled"
    SUPPORT_TICKET = "support_ticket"
    REVIEW = "review"
    NPS_RESPONSE = "nps_response"
    REFERRAL = "referral"
    EMAIL_ENGAGEMENT = "email_engagement"
    MARKETING_SPEND = "marketing_spend"
    CUSTOM = "custom"


class Properties(BaseModel):
    """Base of every properties model: unknown keys are kept as they came."""

    model_config = ConfigDict(extra="allow", frozen=True)
    ID_FIELDS: ClassVar[tuple[str, ...]] = ()  # its Id fields (see Id)
    LABEL_FIELDS: ClassVar[tuple[str, ...]] = ()  # its Label fields

    @model_validator(mode="after")
    def _extras_bounded(self, info: ValidationInfo) -> Properties:
        if _stored(info):
            return self
        _check_text(self, self.ID_FIELDS, self.LABEL_FIELDS)
        extra = self.__pydantic_extra__
        # properties are level 2 of the event object: the engine's decoder and the wire's
        # serializer have nesting limits of their own (see bounds.MAX_JSON_DEPTH)
        deep = bounds.too_deep({**self.__dict__, **extra} if extra else self.__dict__, 2)
        if deep is not None:
            raise ValueError(
                f"nested more than {bounds.MAX_JSON_DEPTH} levels deep at properties{deep}"
            )
        if not extra:
            return self
        if _json_size(extra) > MAX_EXTRA_PROPERTIES_BYTES:
            raise ValueError(
                f"unknown properties take more than {MAX_EXTRA_PROPERTIES_BYTES} bytes of JSON"
            )
        return self


def _json_size(value: Any) -> int:
    try:
        return len(orjson.dumps(value, default=str))
    except TypeError as exc:  # an integer beyond 64 bits: refused, not a crash (a 500)
        raise ValueError(f"is not plain JSON: {exc}") from exc


def _at_most(limit: int) -> AfterValidator:
    """A free-form property (level 3 of the event object) of at most ``limit`` bytes of JSON."""

    def check(value: Any, info: ValidationInfo) -> Any:
        if _stored(info):
            return value
        deep = bounds.too_deep(value, 3)
        if deep is not None:
            raise ValueError(
                f"nested more than {bounds.MAX_JSON_DEPTH} levels deep at "
                f"properties.{info.field_name}{deep}"
            )
        if value and _json_size(value) > limit:
            raise ValueError(f"takes more than {limit} bytes of JSON")
        return value

    return AfterValidator(check)


def _currency(value: str) -> str:
    if value not in ISO_4217:
        raise ValueError("unknown ISO 4217 currency code")
    return value


Currency = Annotated[str, Field(min_length=3, max_length=3, pattern=r"^[A-Z]{3}$")]


class AdClickProperties(Properties):
    LABEL_FIELDS = ("campaign", "ad", "creative")
    campaign: Label
    ad: Label | None = None
    creative: Label | None = None


class SiteVisitProperties(Properties):
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    referrer: Annotated[str, Field(max_length=2048)] | None = None


class SignupProperties(Properties):
    LABEL_FIELDS = ("plan",)
    email_hash: Annotated[str, Field(max_length=128)] | None = None
    plan: Label | None = None


class IdentifyProperties(Properties):
    traits: Annotated[dict[str, Any], _at_most(MAX_TRAITS_BYTES)] = Field(default_factory=dict)


class PurchaseProperties(Properties):
    ID_FIELDS = ("order_id",)
    order_id: Id
    amount: Money
    currency: Currency
    items: Annotated[list[dict[str, Any]], _at_most(MAX_ITEMS_BYTES)] | None = None

    _check_currency = field_validator("currency")(_currency)


class RefundProperties(Properties):
    ID_FIELDS = ("order_id",)
    order_id: Id
    amount: Money
    currency: Currency | None = None

    _check_currency = field_validator("currency")(lambda v: None if v is None else _currency(v))


class SubscriptionCancelledProperties(Properties):
    ID_FIELDS = ("subscription_id",)
    subscription_id: Id | None = None
    reason: Annotated[str, Field(max_length=500)] | None = None


class SupportTicketProperties(Properties):
    ID_FIELDS = ("ticket_id",)
    ticket_id: Id
    status: Literal["opened", "solved"]
    csat: Annotated[int, Field(ge=1, le=5, strict=True)] | None = None


class ReviewProperties(Properties):
    rating: Annotated[int, Field(ge=1, le=5, strict=True)]
    text: Annotated[str, Field(max_length=10_000)] | None = None


class NpsResponseProperties(Properties):
    score: Annotated[int, Field(ge=0, le=10, strict=True)]


class ReferralProperties(Properties):
    ID_FIELDS = ("referred_id",)
    referred_id: Id


class EmailEngagementProperties(Properties):
    LABEL_FIELDS = ("campaign",)
    action: Literal["opened", "clicked"]
    campaign: Label


class MarketingSpendProperties(Properties):
    LABEL_FIELDS = ("channel", "campaign")
    channel: Label
    campaign: Label
    amount: Money
    currency: Currency
    period_start: EventTime
    period_end: EventTime

    _check_currency = field_validator("currency")(_currency)

    @model_validator(mode="after")
    def _period_ordered(self) -> MarketingSpendProperties:
        if self.period_end < self.period_start:
            raise ValueError("period_end is before period_start")
        return self


class CustomProperties(Properties):
    """A touchpoint outside the contract's types (e.g. an unmapped Segment track event)."""

    LABEL_FIELDS = ("name",)

    name: Label


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

    @field_validator("occurred_at")
    @classmethod
    def _not_far_future(cls, value: datetime, info: ValidationInfo) -> datetime:
        value = _event_time(value, info)  # in UTC, within the bounds
        now = (info.context or {}).get("now")
        if isinstance(now, datetime) and value > now + MAX_FUTURE_SKEW:
            raise ValueError("is more than 24h in the future")
        return value

    @model_validator(mode="after")
    def _customer_key_present(self, info: ValidationInfo) -> EventBase:
        """A customer key, and (new events) the bounds of the envelope's ids and labels."""
        if not _stored(info):
            _check_text(self, ENVELOPE_ID_FIELDS, ENVELOPE_LABEL_FIELDS)
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
    | Custom,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


EVENTS_ADAPTER: TypeAdapter[list[Event]] = TypeAdapter(list[Event])


def parse_events(data: list[Any], *, now: datetime | None = None) -> list[Event]:
    """Validate many events in one call (errors' locations start with the index)."""
    return EVENTS_ADAPTER.validate_python(data, context={"now": now})


def parse_event(data: Any, *, now: datetime | None = None) -> Event:
    """Validate a decoded JSON document as an event (``now`` bounds future timestamps)."""
    return EVENT_ADAPTER.validate_python(data, context={"now": now})


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

    Serialized by the event's own model (what the union's serializer picks anyway), which
    skips the union dispatch: about twice as fast on the ingest's hot path.
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


EXAMPLE_PROPERTIES: dict[str, dict[str, Any]] = {
    "ad_click": {"campaign": "black-friday", "ad": "banner-1"},
    "site_visit": {"url": "https://shop.example/", "referrer": "https://search.example/"},
    "signup": {"plan": "free"},
    "identify": {"traits": {"plan": "pro"}},
    "purchase": {"order_id": "o-1", "amount": "59.90", "currency": "EUR"},
    "refund": {"order_id": "o-1", "amount": "59.90", "currency": "EUR"},
    "subscription_cancelled": {"subscription_id": "sub-1"},
    "support_ticket": {"ticket_id": "t-1", "status": "solved", "csat": 5},
    "review": {"rating": 5, "text": "great"},
    "nps_response": {"score": 9},
    "referral": {"referred_id": "friend-1"},
    "email_engagement": {"action": "clicked", "campaign": "welcome"},
    "marketing_spend": {
        "channel": "paid_search",
        "campaign": "black-friday",
        "amount": "1000.00",
        "currency": "EUR",
        "period_start": "2026-11-01T00:00:00Z",
        "period_end": "2026-11-30T23:59:59Z",
    },
    "custom": {"name": "Wishlist Shared"},
}


def example_event(type_: str) -> dict[str, Any]:
    """A valid request body of this type, as a client sends it (for the docs and tests)."""
    doc: dict[str, Any] = {
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"clm-example:{type_}")),
        "type": type_,
        "occurred_at": "2026-11-23T10:15:00Z",
        "channel": "email",
        "properties": EXAMPLE_PROPERTIES[type_],
    }
    if type_ != EventType.MARKETING_SPEND:
        doc["customer_id"] = "cust-42"
    return doc
