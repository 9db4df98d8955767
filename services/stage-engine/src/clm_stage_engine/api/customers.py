"""Read API: customers' stages, facts and history (read token); erasure (admin key)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_domain.consent import ConsentGiven, consent_doc
from clm_domain.events import TEXT_PATTERN
from clm_domain.kpis import exact_money
from clm_domain.lifecycle import STAGE_NAMES, VOCABULARIES, CustomerState, Stage, parse_stage
from clm_stage_engine.deps import State, app_state
from clm_stage_engine.predictions import Horizon, p_alive_of, scores
from clm_stage_engine.records import BOOKKEEPING_FIELDS
from clm_stage_engine.repository import customers, models, segment_members
from clm_stage_engine.repository.rows import row_from_state
from clm_stage_engine.repository.segment_members import Membership
from clm_stage_engine.usecases.erasure import erase_customer
from clm_stage_engine.usecases.errors import AlreadyAnonymised, UnknownCustomer
from clm_web.auth import Principal, authenticate
from clm_web.problem import ProblemError

router = APIRouter(prefix="/v1", tags=["customers"])

#: Customers the ``p_alive_lt`` listing reads a request at most.
SCAN_ROWS = 2000

CustomerId = Annotated[str, Path(min_length=1, max_length=200, pattern=TEXT_PATTERN)]


async def reader(request: Request, state: Annotated[State, Depends(app_state)]) -> Principal:
    return await authenticate(request, state.verifier, "read")


async def admin(request: Request, state: Annotated[State, Depends(app_state)]) -> Principal:
    """Erasure, merges and webhook subscriptions: never a (public) write key."""
    return await authenticate(request, state.verifier, "admin")


class ConsentGivenOut(BaseModel):
    granted: bool = Field(description="given (true) or withdrawn (false)")
    at: datetime = Field(description="the consent event's occurred_at")


class ConsentOut(BaseModel):
    """The customer's latest consent per purpose (null: none recorded)."""

    analytics: ConsentGivenOut | None
    marketing: ConsentGivenOut | None


class MarketingOut(BaseModel):
    allowed: bool = Field(description="false only when the latest marketing consent is withdrawn")
    reason: str = Field(description="why, with the consent's time (opt-out default: allowed)")


class CustomerOut(BaseModel):
    """The customer document: its id, stage, consent and marketing typed here; the other
    fields in docs/api.md."""

    model_config = ConfigDict(extra="allow")

    customer_id: str
    stage: str
    consent: ConsentOut
    marketing: MarketingOut


def display(state: State, stage: Stage | str | None) -> str | None:
    if stage is None:
        return None
    return VOCABULARIES[state.settings.stage_vocabulary][Stage(stage)]


def customer_doc(state: State, customer: CustomerState) -> dict[str, Any]:
    row = row_from_state(customer)
    for private in BOOKKEEPING_FIELDS:
        row.pop(private)
    doc = {k: jsonable(v) for k, v in row.items()}
    doc["stage"] = display(state, customer.stage)
    return doc


async def customer_body(
    state: State,
    customer: CustomerState,
    memberships: Sequence[Membership],
    consent: Mapping[str, ConsentGiven],
) -> dict[str, Any]:
    """The customer's document with its live ``predictions`` (null: no model fitted yet, or
    the customer never purchased), its ``segments`` (by segment id), its ``consent`` per
    purpose and whether ``marketing`` may reach it, and why."""
    doc = customer_doc(state, customer)
    model = await state.models.current()
    settings = state.settings.model
    doc["predictions"] = (
        None
        if model is None
        else scores(
            model,
            customer,
            datetime.now(UTC).date(),
            Horizon(settings.horizon_months, settings.monthly_discount),
        )
    )
    doc["segments"] = [
        {"id": m.segment_id, "name": m.name, "entered_at": m.entered_at.isoformat()}
        for m in memberships
    ]
    doc.update(consent_doc(consent))
    return doc


def jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return exact_money(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def not_found(customer_id: str) -> ProblemError:
    return ProblemError(404, "Not Found", f"no customer {customer_id!r}")


@asynccontextmanager
async def changing_customers(state: State) -> AsyncIterator[AsyncConnection]:
    """The transaction of a use case that changes customers (an erasure, a merge); a
    customer it does not know is a 404."""
    try:
        async with state.engine.begin() as conn:
            yield conn
    except UnknownCustomer as exc:
        raise not_found(exc.customer_id) from None


def stage_param(name: str | None) -> Stage | None:
    if name is None:
        return None
    try:
        return parse_stage(name)
    except ValueError:
        raise ProblemError(
            422,
            "Invalid request",
            f"unknown stage {name!r}",
            errors=[{"field": "stage", "message": f"unknown stage {name!r}"}],
        ) from None


@router.get(
    "/customers",
    summary="Customers, optionally in one stage or under a P(alive), by id (keyset pagination)",
    description=(
        "With `p_alive_lt`, only customers who purchased and whose P(alive) under the current "
        "model is below it, each with its `predictions`. That listing walks customers by id "
        f"{SCAN_ROWS} at a time (a bounded scan): a page can hold fewer than `limit` customers, "
        "even none, and still have a `next_cursor`; the listing ends when `next_cursor` is null."
    ),
    responses={
        401: {},
        403: {},
        409: {"description": "p_alive_lt: no model fitted yet"},
        422: {"description": "unknown stage or bad cursor"},
    },
)
async def list_customers(
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(reader)],
    stage: Annotated[
        str | None,
        Query(description="a stage or its alias", json_schema_extra={"enum": list(STAGE_NAMES)}),
    ] = None,
    p_alive_lt: Annotated[
        float | None, Query(gt=0, le=1, description="only customers with P(alive) below this")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
) -> dict[str, Any]:
    wanted = stage_param(stage)
    after = _cursor_id(cursor)
    stage_value = wanted.value if wanted else None
    if p_alive_lt is not None:
        return await _below_p_alive(state, stage_value, after, p_alive_lt, limit)
    async with state.engine.connect() as conn:
        page = await customers.list_customers(conn, stage=stage_value, after=after, limit=limit)
    last = page[-1].customer_id if len(page) == limit else None
    return {"customers": [customer_doc(state, c) for c in page], "next_cursor": _cursor(last)}


async def _below_p_alive(
    state: State, stage: str | None, after: str | None, below: float, limit: int
) -> dict[str, Any]:
    """A page of the bounded scan behind ``p_alive_lt``."""
    model = await state.models.current()
    if model is None:
        raise ProblemError(409, "Conflict", "no model fitted yet: clm model fit")
    async with state.engine.connect() as conn:
        scanned = await models.scan_purchasers(conn, stage=stage, after=after, limit=SCAN_ROWS)
    settings = state.settings.model
    horizon = Horizon(settings.horizon_months, settings.monthly_discount)
    today = datetime.now(UTC).date()
    page: list[dict[str, Any]] = []
    last = scanned[-1].customer_id if len(scanned) == SCAN_ROWS else None
    for customer in scanned:
        if p_alive_of(model, customer, today) < below:
            doc = customer_doc(state, customer)
            doc["predictions"] = scores(model, customer, today, horizon)
            page.append(doc)
            if len(page) == limit:
                last = customer.customer_id
                break
    return {"customers": page, "next_cursor": _cursor(last)}


def _cursor(last: str | None) -> str | None:
    return None if last is None else base64.urlsafe_b64encode(last.encode()).decode()


def _cursor_id(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        after = base64.urlsafe_b64decode(cursor.encode()).decode()
        if "\x00" in after:
            raise ValueError("not a customer id")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ProblemError(
            422,
            "Invalid request",
            "bad cursor",
            errors=[{"field": "cursor", "message": "bad cursor"}],
        ) from None
    return after


@router.get(
    "/stages", summary="How many customers are in each stage now", responses={401: {}, 403: {}}
)
async def stages(
    state: Annotated[State, Depends(app_state)], _: Annotated[Principal, Depends(reader)]
) -> dict[str, Any]:
    async with state.engine.connect() as conn:
        counts = await customers.count_by_stage(conn)
    return {
        "vocabulary": state.settings.stage_vocabulary,
        "stages": {display(state, s): counts.get(s.value, 0) for s in Stage},
    }


@router.get(
    "/customers/{customer_id}",
    summary="A customer's lifecycle stage, running facts, predictions, segments and consent",
    description=(
        "`consent`: per purpose (`analytics`, `marketing`) the customer's latest consent, "
        '`{"granted": bool, "at": time}`, or null (none recorded). `marketing`: '
        '`{"allowed": bool, "reason": text}`, whether marketing may reach the customer and '
        "why: marketing is opt-out, so it is allowed unless the latest marketing consent is "
        "withdrawn (then marketing webhooks and marketing segment exports leave it out)."
    ),
    responses={
        200: {"model": CustomerOut, "description": "the customer"},
        401: {},
        403: {},
        404: {"description": "unknown customer"},
    },
    response_class=Response,
)
async def get_customer(
    customer_id: CustomerId,
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(reader)],
) -> Response:
    """The hot read: serialized straight to JSON bytes (no response-model pass)."""
    found = await segment_members.read_customer_with_segments(state.engine, customer_id)
    if found is None:
        raise not_found(customer_id)
    body = await customer_body(state, *found)
    return Response(orjson.dumps(body), media_type="application/json")


@router.get(
    "/customers/{customer_id}/history",
    summary="A customer's stage transitions, oldest first",
    responses={401: {}, 403: {}, 404: {"description": "unknown customer"}},
)
async def get_history(
    customer_id: CustomerId,
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(reader)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    if await customers.read_customer(state.engine, customer_id) is None:
        raise not_found(customer_id)
    async with state.engine.connect() as conn:
        history = await customers.get_history(conn, customer_id, limit)
    transitions = []
    for t in history:
        doc = {k: jsonable(v) for k, v in t.items()}
        doc["from_stage"] = display(state, t["from_stage"])
        doc["to_stage"] = display(state, t["to_stage"])
        transitions.append(doc)
    return {"customer_id": customer_id, "transitions": transitions}


@router.delete(
    "/customers/{customer_id}",
    summary="Erase a customer (GDPR): state, history, event log, links, dedupe rows",
    description=(
        "`mode=erase` deletes every row about the customer and its linked anonymous ids, and "
        "remembers only a keyed hash (HMAC) so a replay of the log does not bring it back; "
        "`mode=anonymise` keeps facts and history under a pseudonym and drops the raw events. "
        "An erasure record goes out on the lifecycle stream either way."
    ),
    responses={
        401: {},
        403: {"description": "not an admin key"},
        404: {"description": "unknown customer"},
        409: {"description": "anonymise: the id was anonymised before (erase it instead)"},
    },
)
async def erase(
    customer_id: CustomerId,
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(admin)],
    mode: Literal["erase", "anonymise"] = "erase",
) -> dict[str, Any]:
    model = await state.models.for_rules(state.rules)
    try:
        async with changing_customers(state) as conn:
            pseudonym = await erase_customer(
                conn,
                customer_id,
                mode,
                rules=state.rules,
                pseudonyms=state.pseudonyms,
                topic=state.settings.topics.lifecycle,
                at=datetime.now(UTC),
                model=model,
                segmenting=await state.segmenting(),
            )
    except AlreadyAnonymised:
        raise ProblemError(
            409,
            "Already anonymised",
            f"{customer_id} was anonymised before and came back; its pseudonym (a keyed "
            "hash of the id) is taken. Erase it instead (mode=erase).",
            errors=[{"field": "mode", "message": "anonymised before: use erase"}],
        ) from None
    return {"customer_id": customer_id, "mode": mode, "pseudonym": pseudonym}
