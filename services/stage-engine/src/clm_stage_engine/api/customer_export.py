"""Subject access (GDPR's right of access): everything held about one customer as one JSON
document (admin key).

The document is streamed: its head (the customer document, identity links, segment spans,
data key) is read before the answer starts, so an unknown customer is a plain 404; the
stage transitions and the events follow in keyset pages of :data:`PAGE`, each page read on
a connection of its own and written out before the next is read. A customer with any number
of events costs the process one page at a time, and no connection is held while a slow
client reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from clm_stage_engine.api.customer_events import opened
from clm_stage_engine.api.customers import CustomerId, admin, customer_body, display, not_found
from clm_stage_engine.deps import State, app_state
from clm_stage_engine.repository import customer_data, segment_members
from clm_stage_engine.repository.customer_data import EventKey
from clm_web.auth import Principal

router = APIRouter(prefix="/v1", tags=["customers"])

#: Transitions or events read (and written out) at a time.
PAGE = 500

#: A page reader: the items after a position, and the position of the last one (None: done).
Pages = Callable[[Any], Awaitable[tuple[list[Any], Any]]]


def _json(value: Any) -> bytes:
    """JSON of ``value``; row keys may be ``str`` subclasses (SQLAlchemy's quoted names)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


async def export_head(state: State, customer_id: str) -> dict[str, Any] | None:
    """Everything of the export but its transitions and events (None: unknown customer)."""
    found = await segment_members.read_customer_with_segments(state.engine, customer_id)
    if found is None:
        return None
    body = await customer_body(state, *found)
    async with state.engine.connect() as conn:
        links = await customer_data.anonymous_ids(conn, customer_id)
        spans = await customer_data.membership_spans(conn, customer_id)
        dates = await customer_data.key_dates(
            conn, [customer_id, *(link["anonymous_id"] for link in links)]
        )
    for link in links:
        link["data_key"] = dates.get(link["anonymous_id"])
    return {
        "customer_id": customer_id,
        "exported_at": datetime.now(UTC),
        "customer": body,
        "identity": links,
        "segment_history": spans,
        "data_key": dates.get(customer_id),
        # per purpose, and whether marketing may reach it (also in the customer document)
        "consent": body["consent"],
        "marketing": body["marketing"],
    }


def _transitions(state: State, customer_id: str) -> Pages:
    async def page(after: int | None) -> tuple[list[Any], int | None]:
        async with state.engine.connect() as conn:
            rows = await customer_data.transitions_page(conn, customer_id, after, PAGE)
        for _, t in rows:
            t["from_stage"] = display(state, t["from_stage"])
            t["to_stage"] = display(state, t["to_stage"])
        return [t for _, t in rows], rows[-1][0] if len(rows) == PAGE else None

    return page


def _events(state: State, customer_id: str) -> Pages:
    async def page(after: EventKey | None) -> tuple[list[Any], EventKey | None]:
        async with state.engine.connect() as conn:
            rows = await customer_data.events_page(conn, customer_id, after, PAGE)
            events = await opened(conn, state.masters, rows)
        return events, rows[-1].key if len(rows) == PAGE else None

    return page


async def _array(name: str, pages: Pages) -> AsyncIterator[bytes]:
    """``,"name":[...]``: every page's items, written out page by page."""
    yield b',"' + name.encode() + b'":['
    items, after = await pages(None)
    first = True
    while True:
        if items:
            yield (b"" if first else b",") + b",".join(map(_json, items))
            first = False
        if after is None:
            break
        items, after = await pages(after)
    yield b"]"


async def export_document(
    head: dict[str, Any], arrays: list[tuple[str, Pages]]
) -> AsyncIterator[bytes]:
    """The head's members, then each array, as one JSON object."""
    yield _json(head)[:-1]  # the head without its closing brace (it has members)
    for name, pages in arrays:
        async for chunk in _array(name, pages):
            yield chunk
    yield b"}"


@router.get(
    "/customers/{customer_id}/export",
    summary="Everything held about a customer, as one JSON document (subject access)",
    description=(
        "GDPR's right of access: `customer` (the document of `GET /v1/customers/{id}`: "
        "facts, stage, predictions, segments), `history` (every stage transition), `events` "
        "(every stored event, personal fields opened, as `GET /v1/customers/{id}/events` "
        "shows them), `identity` (its anonymous ids), `segment_history` (every membership "
        "span), `data_key` (when its key was made; never the key) and `consent`. Streamed, "
        "as an attachment. Admin key only."
    ),
    responses={
        200: {
            "content": {"application/json": {}},
            "description": "the export (Content-Disposition: attachment)",
        },
        401: {},
        403: {"description": "not an admin key"},
        404: {"description": "unknown customer"},
    },
    response_class=StreamingResponse,
)
async def export(
    customer_id: CustomerId,
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(admin)],
) -> StreamingResponse:
    head = await export_head(state, customer_id)
    if head is None:
        raise not_found(customer_id)
    arrays = [
        ("history", _transitions(state, customer_id)),
        ("events", _events(state, customer_id)),
    ]
    filename = f"customer-{customer_id}-export.json"
    return StreamingResponse(
        export_document(head, arrays),
        media_type="application/json",
        headers={"Content-Disposition": _attachment(filename)},
    )


def _attachment(filename: str) -> str:
    """``attachment; filename=...``: the id as it is where plain ASCII allows, else also
    percent-encoded as RFC 6266's ``filename*``."""
    safe = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    header = f'attachment; filename="{safe}"'
    if safe != filename:
        header += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return header
