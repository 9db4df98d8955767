"""The events listing's cursor: what it gives back it takes, anything else is a 422 naming
``after`` (never a value Postgres cannot take)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clm_domain import bounds
from clm_stage_engine.api.customer_events import event_cursor, event_key
from clm_web.problem import ProblemError

TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1)


@given(
    at=st.datetimes(
        min_value=bounds.TIME_MIN.replace(tzinfo=None),
        max_value=datetime(9899, 12, 31),
        timezones=st.just(UTC),
    ),
    source=TEXT,
    event_id=TEXT,
)
def test_a_cursor_given_is_taken_back(at: datetime, source: str, event_id: str) -> None:
    assert event_key(event_cursor((at, source, event_id))) == (at, source, event_id)


def _encoded(value: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "!!",
        "bm90IGpzb24",
        _encoded({"a": 1}),
        _encoded(["2026-11-23T10:00:00Z", "shop"]),
        _encoded(["2026-11-23T10:00:00", "shop", "e-1"]),  # no offset
        _encoded(["0001-01-01T00:00:00+14:00", "shop", "e-1"]),  # beyond the bounds
        _encoded(["2026-11-23T10:00:00Z", 1, "e-1"]),
        _encoded(["2026-11-23T10:00:00Z", "sh\x00op", "e-1"]),
        _encoded([20261123, "shop", "e-1"]),
        base64.urlsafe_b64encode(b'["2026-11-23T10:00:00Z","\\ud800","e"]').decode(),
    ],
)
def test_anything_else_is_a_422_naming_after(cursor: str) -> None:
    with pytest.raises(ProblemError) as raised:
        event_key(cursor)
    assert raised.value.status == 422
    assert [e["field"] for e in raised.value.errors] == ["after"]


def test_a_cursor_in_another_offset_is_the_same_instant() -> None:
    at = datetime(2026, 11, 23, 12, tzinfo=timezone(timedelta(hours=2)))
    key = event_key(_encoded([at.isoformat(), "shop", "e-1"]))
    assert key == (datetime(2026, 11, 23, 10, tzinfo=UTC), "shop", "e-1")
