"""A customer's stored events with their personal fields opened (read token).

Each event is the document as it was sent, its personal fields (``clm_domain.personal``)
decrypted under their subject's data key, and a ``personal`` member saying what became of
them: ``none`` (it had none), ``opened``, or ``erased`` (the key is gone: only the clear
fields are shown). A missing key is never an error.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_domain.bounds import utc_time
from clm_infra.privacy.ciphers import MasterKeys
from clm_infra.privacy.reader import open_events
from clm_stage_engine.api.customers import CustomerId, not_found, reader
from clm_stage_engine.deps import State, app_state
from clm_stage_engine.repository import customer_data, customers
from clm_stage_engine.repository.customer_data import EventKey, StoredEvent
from clm_web.auth import Principal
from clm_web.problem import ProblemError

router = APIRouter(prefix="/v1", tags=["customers"])

#: The most events a page holds.
MAX_PAGE = 500


async def opened(
    conn: AsyncConnection, masters: MasterKeys, rows: Sequence[StoredEvent]
) -> list[dict[str, Any]]:
    """The stored events as sent, personal fields opened (one read of the keys for all),
    each with its ``personal`` outcome."""
    docs = await open_events(conn, masters, [orjson.loads(r.payload) for r in rows])
    return [{**doc, "personal": personal} for doc, personal in docs]


def event_cursor(key: EventKey) -> str:
    """The opaque cursor after ``key``: base64url of [occurred_at, source, event_id]."""
    at, source, event_id = key
    return base64.urlsafe_b64encode(orjson.dumps([at.isoformat(), source, event_id])).decode()


def _bad_cursor() -> ProblemError:
    return ProblemError(
        422,
        "Invalid request",
        "after: not a cursor this listing gave",
        errors=[{"field": "after", "message": "not a cursor this listing gave"}],
    )


def event_key(cursor: str | None) -> EventKey | None:
    """The listing's place a cursor of :func:`event_cursor` names (422 naming ``after``)."""
    if cursor is None:
        return None
    try:
        at, source, event_id = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        when = datetime.fromisoformat(at)
        if when.tzinfo is None or not isinstance(source, str) or not isinstance(event_id, str):
            raise ValueError("not a cursor")
        for text in (source, event_id):
            if "\x00" in text:
                raise ValueError("a NUL")
            text.encode()  # no lone surrogate: Postgres text is UTF-8
        return utc_time(when), source, event_id
    except (ValueError, TypeError, UnicodeEncodeError, binascii.Error):
        raise _bad_cursor() from None


@router.get(
    "/customers/{customer_id}/events",
    summary="A customer's stored events, oldest first, personal fields opened (keyset pages)",
    description=(
        "Each event as it was sent, its personal fields decrypted, with `personal`: `none` "
        "(it carried none), `opened`, or `erased` (its key is gone: the clear fields only). "
        "Ordered by `occurred_at`, then `source` and `event_id`. Pass a page's `next` as "
        "`after` for the next page; `next` is null on the last. An anonymised customer has "
        "no events; a merged one has the merged profiles' too."
    ),
    responses={
        401: {},
        403: {},
        404: {"description": "unknown customer"},
        422: {"description": "a bad `after` or `limit`"},
    },
)
async def list_events(
    customer_id: CustomerId,
    state: Annotated[State, Depends(app_state)],
    _: Annotated[Principal, Depends(reader)],
    after: Annotated[
        str | None, Query(min_length=1, max_length=1200, description="a page's `next`")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> dict[str, Any]:
    key = event_key(after)
    async with state.engine.connect() as conn:
        if await customers.get_customer(conn, customer_id) is None:
            raise not_found(customer_id)
        page = await customer_data.events_page(conn, customer_id, key, limit)
        events = await opened(conn, state.masters, page)
    return {
        "customer_id": customer_id,
        "events": events,
        "next": event_cursor(page[-1].key) if len(page) == limit else None,
    }
