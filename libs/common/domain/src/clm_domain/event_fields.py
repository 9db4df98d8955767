"""The field types of the event contract (ids, labels, money, times, currencies) and the
bounds a new event's fields must meet (see :mod:`clm_domain.bounds`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError

from clm_domain import bounds
from clm_domain.currencies import ISO_4217

MAX_EXTRA_PROPERTIES_BYTES = 16 * 1024  # unknown properties are kept, up to this much JSON
MAX_TRAITS_BYTES = 16 * 1024  # an identify's traits, as JSON
MAX_ITEMS_BYTES = 64 * 1024  # a purchase's items, as JSON

#: The error type of a new event's id or label breaking the bounds; ``ctx["field"]`` names it.
BOUNDS_ERROR = "bounds"


#: The validation context's flag of an event a client sent (not one read from the topic or
#: the store): what only the ingest may set is refused in it.
INBOUND = "inbound"


def is_inbound(info: ValidationInfo) -> bool:
    """Whether this is an event as a client sent it (see INBOUND)."""
    context = info.context
    return context is not None and context.get(INBOUND) is True


def is_stored(info: ValidationInfo) -> bool:
    """Whether this is an event read back from the engine's store (see bounds.STORED)."""
    context = info.context
    return context is not None and context.get(bounds.STORED) is True


def check_text(model: BaseModel, ids: tuple[str, ...], labels: tuple[str, ...]) -> None:
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


def event_time(value: datetime, info: ValidationInfo) -> datetime:
    """A timestamp in UTC: within the bounds for a new event, as it is for a stored one."""
    return bounds.as_utc(value) if is_stored(info) else bounds.utc_time(value)


#: Ids and labels: see :mod:`clm_domain.bounds` (Postgres text cannot even hold a NUL; an id
#: is one path segment of ``/v1/customers/{id}``). The field constraint is what every stored
#: event meets; the stricter rules of new events (the schema's pattern) are checked by each
#: model's validator, for the fields it lists in ``ID_FIELDS`` and ``LABEL_FIELDS`` (one
#: Python call a model, not one a field: the engine decodes every event).
TEXT_PATTERN = bounds.TEXT_PATTERN


def _text(max_length: int, new_pattern: str) -> Any:
    """A text field: constrained as every stored event meets it, its schema showing the
    ``new_pattern`` a new event's value must match."""
    return Field(
        min_length=1,
        max_length=max_length,
        pattern=bounds.STORED_TEXT_PATTERN,
        json_schema_extra={"pattern": new_pattern},
    )


Id = Annotated[str, _text(bounds.MAX_ID_LENGTH, bounds.ID_PATTERN)]
Label = Annotated[str, _text(bounds.MAX_LABEL_LENGTH, TEXT_PATTERN)]
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
EventTime = Annotated[AwareDatetime, AfterValidator(event_time)]
Currency = Annotated[str, Field(min_length=3, max_length=3, pattern=r"^[A-Z]{3}$")]


def known_currency(value: str) -> str:
    """An ISO 4217 code (ValueError if unknown)."""
    if value not in ISO_4217:
        raise ValueError("unknown ISO 4217 currency code")
    return value


def json_size(value: Any) -> int:
    """The size of ``value`` as JSON, in bytes (ValueError if it is not plain JSON)."""
    try:
        return len(orjson.dumps(value, default=str))
    except TypeError as exc:  # an integer beyond 64 bits: refused, not a crash (a 500)
        raise ValueError(f"is not plain JSON: {exc}") from exc


def at_most(limit: int) -> AfterValidator:
    """A free-form property (level 3 of the event object) of at most ``limit`` bytes of JSON."""

    def check(value: Any, info: ValidationInfo) -> Any:
        if is_stored(info):
            return value
        deep = bounds.too_deep(value, 3)
        if deep is not None:
            raise ValueError(
                f"nested more than {bounds.MAX_JSON_DEPTH} levels deep at "
                f"properties.{info.field_name}{deep}"
            )
        if value and json_size(value) > limit:
            raise ValueError(f"takes more than {limit} bytes of JSON")
        return value

    return AfterValidator(check)


def _ip_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("is not an IPv4 or IPv6 address") from None


class EventContext(BaseModel):
    """Where the event came from: personal data, sealed by the ingest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ip: Annotated[str, Field(max_length=45), AfterValidator(_ip_address)] | None = None
    user_agent: Annotated[str, Field(min_length=1, max_length=1000)] | None = None


#: The largest sealed part: every personal field at its bound, as base64, with room for
#: JSON's escapes.
MAX_SEALED_CHARS = 600_000


class Sealed(BaseModel):
    """An event's personal fields, encrypted under its subject's data key (AES-256-GCM):
    ``data`` is the base64url of the nonce and the ciphertext of their JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    subject: Annotated[str, Field(min_length=1, max_length=bounds.MAX_ID_LENGTH)]
    key: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    data: Annotated[str, Field(min_length=1, max_length=MAX_SEALED_CHARS)]
