"""The touchpoint types of event contract v1 and the ``properties`` each one carries.

Unknown properties are kept as they came (within bounds); money is a decimal string on the
wire."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from clm_domain import bounds
from clm_domain.event_fields import (
    MAX_EXTRA_PROPERTIES_BYTES,
    MAX_ITEMS_BYTES,
    MAX_TRAITS_BYTES,
    Currency,
    EventTime,
    Id,
    Label,
    Money,
    at_most,
    check_text,
    is_inbound,
    is_stored,
    json_size,
    known_currency,
)


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
    CONSENT = "consent"


class Properties(BaseModel):
    """Base of every properties model: unknown keys are kept as they came."""

    model_config = ConfigDict(extra="allow", frozen=True)
    ID_FIELDS: ClassVar[tuple[str, ...]] = ()  # its Id fields (see Id)
    LABEL_FIELDS: ClassVar[tuple[str, ...]] = ()  # its Label fields

    @model_validator(mode="after")
    def _extras_bounded(self, info: ValidationInfo) -> Properties:
        if is_stored(info):
            return self
        check_text(self, self.ID_FIELDS, self.LABEL_FIELDS)
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
        if json_size(extra) > MAX_EXTRA_PROPERTIES_BYTES:
            raise ValueError(
                f"unknown properties take more than {MAX_EXTRA_PROPERTIES_BYTES} bytes of JSON"
            )
        return self


class AdClickProperties(Properties):
    LABEL_FIELDS = ("campaign", "ad", "creative")
    campaign: Label
    ad: Label | None = None
    creative: Label | None = None


def _url_required(schema: dict[str, Any]) -> None:
    schema["required"] = ["url"]


class SiteVisitProperties(Properties):
    """``url`` is required of a client; on the topic it is personal data, sealed."""

    model_config = ConfigDict(json_schema_extra=_url_required)

    url: Annotated[str, Field(min_length=1, max_length=2048)] | None = Field(
        default=None, validate_default=True
    )
    referrer: Annotated[str, Field(max_length=2048)] | None = None

    @field_validator("url")
    @classmethod
    def _client_sends_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and is_inbound(info):
            raise PydanticCustomError("missing", "Field required")
        return value


class SignupProperties(Properties):
    LABEL_FIELDS = ("plan",)
    email_hash: Annotated[str, Field(max_length=128)] | None = None
    plan: Label | None = None


class IdentifyProperties(Properties):
    traits: Annotated[dict[str, Any], at_most(MAX_TRAITS_BYTES)] = Field(default_factory=dict)


class PurchaseProperties(Properties):
    ID_FIELDS = ("order_id",)
    order_id: Id
    amount: Money
    currency: Currency
    items: Annotated[list[dict[str, Any]], at_most(MAX_ITEMS_BYTES)] | None = None

    _check_currency = field_validator("currency")(known_currency)


class RefundProperties(Properties):
    ID_FIELDS = ("order_id",)
    order_id: Id
    amount: Money
    currency: Currency | None = None

    _check_currency = field_validator("currency")(
        lambda v: None if v is None else known_currency(v)
    )


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

    _check_currency = field_validator("currency")(known_currency)

    @model_validator(mode="after")
    def _period_ordered(self) -> MarketingSpendProperties:
        if self.period_end < self.period_start:
            raise ValueError("period_end is before period_start")
        return self


class CustomProperties(Properties):
    """A touchpoint outside the contract's types (e.g. an unmapped Segment track event)."""

    LABEL_FIELDS = ("name",)

    name: Label


class ConsentProperties(Properties):
    """A customer's consent for one purpose, given (``granted``) or withdrawn, as of the
    event's ``occurred_at``. Not a touchpoint: it changes no lifecycle fact
    (:mod:`clm_domain.consent`)."""

    purpose: Literal["analytics", "marketing"]
    granted: Annotated[bool, Field(strict=True)]
