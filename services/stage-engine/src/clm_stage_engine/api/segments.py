"""Segments over HTTP: define, change and delete them (admin key); read them, their members
and their history (read token). ``docs/segments.md`` describes the condition language."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from clm_domain import bounds
from clm_domain.consent import MARKETING, WITHDRAWN
from clm_domain.events import TEXT_PATTERN
from clm_domain.segments import ConditionError, dump_condition, parse_condition
from clm_stage_engine.api.customers import admin, reader
from clm_stage_engine.api.segment_docs import history_doc, segment_doc
from clm_stage_engine.deps import State, app_state
from clm_stage_engine.repository import segment_defs, segment_members
from clm_web.auth import Principal
from clm_web.problem import ProblemError

router = APIRouter(prefix="/v1/segments", tags=["segments"])

SegmentId = Annotated[int, Path(ge=1, le=2**63 - 1, description="a segment's id")]
#: The most buckets a history answers with.
MAX_BUCKETS = 1000
DEFAULT_HISTORY = timedelta(days=7)
NAME = Field(min_length=1, max_length=200, pattern=TEXT_PATTERN, description="Unique.")
DESCRIPTION = Field(max_length=2000, description="Free text (up to 2000 characters).")
CONDITION = Field(
    description="The condition (docs/segments.md; JSON Schema: "
    "deploy/schemas/segment-condition.schema.json)."
)
ANNOUNCE = Field(
    description="Publish the backfill's entries (cause `backfill`) on clm.segments.v1 and to "
    "webhooks; otherwise the backfill records memberships silently."
)


def invalid(field: str, message: str) -> ProblemError:
    return ProblemError(
        422, "Invalid request", f"{field}: {message}", errors=[{"field": field, "message": message}]
    )


def _text(value: str | None) -> str | None:
    """Text Postgres can store: valid UTF-8 (no lone surrogate) and no NUL."""
    if value is not None and ("\x00" in value or not _utf8(value)):
        raise ValueError("must be valid UTF-8 text without NUL")
    return value


def _utf8(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _shown(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode()


class SegmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, NAME]
    description: Annotated[str, DESCRIPTION] = ""
    condition: Annotated[dict[str, Any], CONDITION]
    announce_backfill: Annotated[bool, ANNOUNCE] = False

    _texts = field_validator("name", "description")(_text)


class SegmentPatch(BaseModel):
    """The fields to change; absent (or null) ones stay."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str | None, NAME] = None
    description: Annotated[str | None, DESCRIPTION] = None
    condition: Annotated[dict[str, Any] | None, CONDITION] = None
    announce_backfill: Annotated[bool | None, ANNOUNCE] = None

    _texts = field_validator("name", "description")(_text)


def canonical_condition(doc: dict[str, Any]) -> dict[str, Any]:
    """The condition in its canonical form, or a 422 naming the wrong node
    (``condition.all[2].value``)."""
    try:
        node = parse_condition(doc)
    except ConditionError as exc:
        raise invalid(_shown("condition" + exc.path[1:]), _shown(exc.message)) from None
    canonical = dump_condition(node)
    try:
        orjson.dumps(canonical)
    except orjson.JSONEncodeError:
        raise invalid("condition", "must be valid UTF-8 text") from None
    return canonical


def name_taken(name: str) -> ProblemError:
    return ProblemError(
        409,
        "Conflict",
        f"a segment named {name!r} exists already",
        errors=[{"field": "name", "message": "taken"}],
    )


def unknown(segment_id: int) -> ProblemError:
    return ProblemError(404, "Not Found", f"no segment {segment_id}")


@router.post(
    "",
    status_code=201,
    summary="Define a segment; every customer is evaluated (a backfill) in the background",
    responses={
        401: {},
        403: {"description": "not an admin key"},
        409: {"description": "the name is taken"},
        422: {"description": "a bad condition (the field names its node), or too many segments"},
    },
)
async def create(
    body: SegmentIn,
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(admin)],
) -> dict[str, Any]:
    condition = canonical_condition(body.condition)
    limit = state.settings.segments.max_active
    try:
        async with state.engine.begin() as conn:
            row = await segment_defs.create_segment(
                conn,
                name=body.name,
                description=body.description,
                condition=condition,
                announce_backfill=body.announce_backfill,
                max_active=limit,
            )
    except segment_defs.NameTaken:
        raise name_taken(body.name) from None
    except segment_defs.TooManySegments:
        raise invalid(
            "name", f"{limit} segments are defined already (CLM_SEGMENTS_MAX_ACTIVE): delete one"
        ) from None
    return segment_doc(row, size=0)


@router.get("", summary="The segments defined (not deleted), by id", responses={401: {}, 403: {}})
async def list_all(
    state: Annotated[State, Depends(app_state)], _: Annotated[Principal, Depends(reader)]
) -> dict[str, Any]:
    async with state.engine.connect() as conn:
        rows = await segment_defs.list_segments(conn)
    return {"segments": [segment_doc(row) for row in rows]}


@router.get(
    "/{segment_id}",
    summary="A segment: its definition, size, backfill progress and versions",
    responses={401: {}, 403: {}, 404: {"description": "unknown or deleted segment"}},
)
async def show(
    segment_id: SegmentId,
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(reader)],
) -> dict[str, Any]:
    async with state.engine.connect() as conn:
        row = await segment_defs.get_segment(conn, segment_id)
        if row is None or row["deleted_at"] is not None:
            raise unknown(segment_id)
        size = await segment_members.size_at(conn, segment_id)
        versions = await segment_defs.list_versions(conn, segment_id)
    return segment_doc(row, size=size, versions=versions)


@router.patch(
    "/{segment_id}",
    summary="Change a segment; a new condition is a new version, with a new backfill",
    responses={
        401: {},
        403: {"description": "not an admin key"},
        404: {"description": "unknown or deleted segment"},
        409: {"description": "the name is taken"},
        422: {"description": "a bad condition (the field names its node)"},
    },
)
async def change(
    segment_id: SegmentId,
    body: SegmentPatch,
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(admin)],
) -> dict[str, Any]:
    changes: dict[str, Any] = {
        k: v for k, v in body.model_dump(exclude_none=True).items() if k != "condition"
    }
    if body.condition is not None:
        changes["condition"] = canonical_condition(body.condition)
    try:
        async with state.engine.begin() as conn:
            row = await segment_defs.patch_segment(conn, segment_id, changes)
            if row is None:
                raise unknown(segment_id)
            size = await segment_members.size_at(conn, segment_id)
    except segment_defs.NameTaken as exc:
        raise name_taken(exc.name) from None
    return segment_doc(row, size=size)


@router.delete(
    "/{segment_id}",
    summary="Delete a segment: its members leave it (cause `deleted`), its history stays",
    responses={
        401: {},
        403: {"description": "not an admin key"},
        404: {"description": "unknown or deleted segment"},
    },
)
async def delete(
    segment_id: SegmentId,
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(admin)],
) -> dict[str, Any]:
    async with state.engine.begin() as conn:
        if not await segment_defs.delete_segment(conn, segment_id):
            raise unknown(segment_id)
    return {"id": segment_id, "deleted": True}


@router.get(
    "/{segment_id}/members",
    summary="A segment's members now, by customer id (keyset pagination)",
    description=(
        "Pass a page's `next` as `after` for the next page; `next` is null on the last. "
        "With `purpose=marketing` (an export for marketing), members whose latest marketing "
        "consent is withdrawn are left out, and `excluded` counts them across the whole "
        'segment now (`{"marketing_consent_withdrawn": n}`); without it, every member is '
        "listed and `excluded` is absent."
    ),
    responses={401: {}, 403: {}, 404: {"description": "unknown or deleted segment"}},
)
async def members(
    segment_id: SegmentId,
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(reader)],
    after: Annotated[
        str | None,
        Query(min_length=1, max_length=200, pattern=TEXT_PATTERN, description="a customer id"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    purpose: Annotated[
        Literal["marketing"] | None,
        Query(description="marketing: leave out members who withdrew marketing consent"),
    ] = None,
) -> dict[str, Any]:
    if after is not None and not _utf8(after):
        raise invalid("after", "must be valid UTF-8 text")
    marketing = purpose == MARKETING
    async with state.engine.connect() as conn:
        row = await segment_defs.get_segment(conn, segment_id)
        if row is None or row["deleted_at"] is not None:
            raise unknown(segment_id)
        page = await segment_members.members_page(
            conn, segment_id, after, limit, marketing=marketing
        )
        withdrawn = await segment_members.withdrawn_members(conn, segment_id) if marketing else 0
    excluded = {"excluded": {WITHDRAWN: withdrawn}} if marketing else {}
    return {
        "segment_id": segment_id,
        "members": [
            {
                "customer_id": m["customer_id"],
                "entered_at": m["entered_at"].isoformat(),
                "version": m["version"],
            }
            for m in page
        ],
        "next": page[-1]["customer_id"] if len(page) == limit else None,
        **excluded,
    }


def _in_bounds(at: datetime, field: str) -> datetime:
    if at.tzinfo is None:
        raise invalid(field, "needs a UTC offset (such as Z or +02:00)")
    try:
        return bounds.utc_time(at)
    except ValueError as exc:
        raise invalid(field, str(exc)) from None


def history_range(
    from_: datetime | None, to: datetime | None, bucket: segment_members.Bucket, now: datetime
) -> tuple[datetime, datetime]:
    """``(from, to]`` in UTC, checked: within the contract's time bounds, ``to`` after
    ``from``, at most :data:`MAX_BUCKETS` buckets."""
    end = now if to is None else _in_bounds(to, "to")
    start = end - DEFAULT_HISTORY if from_ is None else _in_bounds(from_, "from")
    if start < bounds.TIME_MIN:
        start = bounds.TIME_MIN
    if end <= start:
        raise invalid("to", "must be after from")
    step = timedelta(hours=1 if bucket == "hour" else 24)
    aligned = start.replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        aligned = aligned.replace(hour=0)
    if (end - aligned) / step > MAX_BUCKETS:
        raise invalid(
            "bucket", f"more than {MAX_BUCKETS} {bucket}s from from to to: narrow the range"
        )
    return start, end


@router.get(
    "/{segment_id}/history",
    summary="A segment's entries, exits and size over time, by hour or day",
    description=(
        "From the membership spans, deleted segments included. A member at instant t entered "
        "at or before t and had not left at t; an entry or exit at instant t counts in the "
        "bucket (start, end] that holds t, so each bucket's `size` (at its end) is the "
        "previous one's plus its entries minus its exits. Buckets are whole UTC hours or days, "
        f"the first and last cut at `from` and `to`; at most {MAX_BUCKETS}. Defaults: `to` "
        "now, `from` 7 days before `to`, `bucket` day."
    ),
    responses={
        401: {},
        403: {},
        404: {"description": "unknown segment"},
        422: {"description": "to not after from, or too many buckets"},
    },
)
async def history(
    segment_id: SegmentId,
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(reader)],
    from_: Annotated[datetime | None, Query(alias="from", description="RFC 3339")] = None,
    to: Annotated[datetime | None, Query(description="RFC 3339")] = None,
    bucket: Literal["hour", "day"] = "day",
) -> dict[str, Any]:
    start, end = history_range(from_, to, bucket, datetime.now(UTC))
    async with state.engine.connect() as conn:
        if await segment_defs.get_segment(conn, segment_id) is None:
            raise unknown(segment_id)
        found = await segment_members.history(conn, segment_id, start, end, bucket)
    return history_doc(segment_id, start, end, bucket, found)
