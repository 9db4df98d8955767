"""The contract's classification of personal fields, and sealing them under a data key."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from clm_domain import personal
from clm_domain.events import (
    EVENT_ADAPTER,
    EVENT_TYPES,
    EventBase,
    dump_event,
    error_field,
    example_event,
    parse_event,
    parse_event_json,
)
from clm_infra.privacy.ciphers import (
    MasterKeyMissing,
    Undecryptable,
    master_keys,
    new_master_key,
    parse_master_keys,
)
from clm_infra.privacy.sealing import open_event, seal_event, subject_of
from clm_infra.settings import CommonSettings

MASTERS = parse_master_keys(new_master_key())


def _example(kind: str) -> dict[str, Any]:
    return {**example_event(kind), "source": "shop"}


def _properties_model(kind: str) -> type[BaseModel]:
    event = parse_event(_example(kind))
    return type(event.properties)


def test_every_type_and_field_is_classified_once() -> None:
    assert set(personal.PERSONAL) == set(personal.CLEAR) == EVENT_TYPES
    for kind in EVENT_TYPES:
        fields = set(_properties_model(kind).model_fields)
        said = set(personal.PERSONAL[kind]) | set(personal.CLEAR[kind])
        assert fields == said, kind
        assert not set(personal.PERSONAL[kind]) & set(personal.CLEAR[kind])
    envelope = set(EventBase.model_fields) - {"sealed"}
    assert envelope == set(personal.ENVELOPE_PERSONAL) | set(personal.ENVELOPE_CLEAR) - {"type"}


def test_an_example_is_a_fresh_copy() -> None:
    changed = example_event("site_visit")
    del changed["properties"]["url"]
    assert example_event("site_visit")["properties"]["url"]


def test_the_readme_shows_the_classification() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert personal.classification_table() in readme


PERSONAL_EVENT: dict[str, Any] = {
    "event_id": "e-1",
    "type": "purchase",
    "customer_id": "cust-1",
    "occurred_at": "2026-11-23T10:15:00Z",
    "source": "shop",
    "channel": "email",
    "context": {"ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (Secret Browser)"},
    "properties": {
        "order_id": "o-1",
        "amount": "59.90",
        "currency": "EUR",
        "items": [{"sku": "a-1", "title": "Gift for Ada Lovelace"}],
        "shipping_name": "Ada Lovelace",
    },
}
SECRETS = (b"203.0.113.7", b"Secret Browser", b"Ada Lovelace", b"a-1")


def test_a_sealed_event_shows_its_clear_fields_only_and_opens_to_what_was_sent() -> None:
    event = parse_event(PERSONAL_EVENT)
    subject = subject_of(event)
    assert subject == "cust-1"
    key, _ = MASTERS.new_data_key(subject)
    wire = seal_event(event, key)
    for secret in SECRETS:
        assert secret not in wire
    on_topic = parse_event_json(wire)  # what the stage engine reads
    assert on_topic.properties.amount == event.properties.amount  # type: ignore[union-attr]
    assert on_topic.sealed is not None
    assert on_topic.sealed.subject == "cust-1"
    doc, what = open_event(orjson.loads(wire), {"cust-1": key})
    assert what == "opened"
    assert doc == orjson.loads(dump_event(event))


def test_a_part_reads_as_erased_without_its_key_or_on_another_event() -> None:
    event = parse_event(PERSONAL_EVENT)
    key, _ = MASTERS.new_data_key("cust-1")
    wire = orjson.loads(seal_event(event, key))
    doc, what = open_event(wire, {})
    assert what == "erased"
    assert "sealed" not in doc
    assert "context" not in doc
    assert doc["properties"]["amount"] == "59.90"
    other, _ = MASTERS.new_data_key("cust-1")  # erased and back: a new key
    assert open_event(wire, {"cust-1": other})[1] == "erased"
    moved = {**wire, "event_id": "e-2"}  # a part copied onto another event does not open
    assert open_event(moved, {"cust-1": key})[1] == "erased"


def test_events_without_personal_fields_are_published_as_they_were() -> None:
    for kind in ("ad_click", "refund", "nps_response", "marketing_spend"):
        event = parse_event(_example(kind))
        assert subject_of(event) is None
        assert orjson.loads(seal_event(event, None)) == orjson.loads(dump_event(event))
    spend = _example("marketing_spend")
    spend["properties"]["note"] = "agency invoice"  # about no one: nothing to seal
    assert subject_of(parse_event(spend)) is None


def test_a_client_cannot_send_a_sealed_part_nor_leave_out_the_url() -> None:
    sealed = {**PERSONAL_EVENT, "sealed": {"subject": "x", "key": "0" * 32, "data": "AA"}}
    with pytest.raises(ValidationError) as exc:
        parse_event(sealed)
    error = exc.value.errors()[0]
    assert error_field(tuple(error["loc"]), error["type"], error.get("ctx")) == "sealed"
    visit = _example("site_visit")
    del visit["properties"]["url"]
    with pytest.raises(ValidationError) as exc:
        parse_event(visit)
    error = exc.value.errors()[0]
    assert error_field(tuple(error["loc"]), error["type"], error.get("ctx")) == "properties.url"
    schema = EVENT_ADAPTER.json_schema()["$defs"]["SiteVisitProperties"]
    assert schema["required"] == ["url"]


def test_a_bad_ip_address_is_refused_by_name() -> None:
    bad = {**PERSONAL_EVENT, "context": {"ip": "999.1.1.1"}}
    with pytest.raises(ValidationError) as exc:
        parse_event(bad)
    error = exc.value.errors()[0]
    assert error_field(tuple(error["loc"]), error["type"], error.get("ctx")) == "context.ip"


def test_rotation_rewraps_under_the_new_master_key_only() -> None:
    old_entry, new_entry = new_master_key(), new_master_key()
    old = parse_master_keys(old_entry)
    key, wrapped = old.new_data_key("cust-9")
    only_new = parse_master_keys(new_entry)
    with pytest.raises(Undecryptable):
        only_new.unwrap("cust-9", key.key_id, old.current_id, wrapped)  # old one not configured
    rotating = parse_master_keys(f"{new_entry}\n{old_entry}")  # newest first
    rewrapped = rotating.rewrap("cust-9", key.key_id, old.current_id, wrapped)
    again = only_new.unwrap("cust-9", key.key_id, only_new.current_id, rewrapped)
    aad = b"x"
    assert again.open(key.seal(b"hello", aad), aad) == b"hello"
    with pytest.raises(Undecryptable):  # a wrapped key moved onto another subject
        only_new.unwrap("cust-8", key.key_id, only_new.current_id, rewrapped)


@pytest.mark.parametrize(
    "text",
    [
        "nocolon",
        "k:notbase64!!",
        f"k:{base64.b64encode(b'short').decode()}",
        "a:" + "A" * 44 + ",a:" + "A" * 44,  # one id twice
    ],
)
def test_malformed_master_keys_are_refused(text: str) -> None:
    with pytest.raises(MasterKeyMissing):
        parse_master_keys(text)


def test_prod_needs_a_master_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLM_PRIVACY_MASTER_KEYS", raising=False)
    with pytest.raises(MasterKeyMissing):
        master_keys(CommonSettings(env="prod"))
    assert master_keys(CommonSettings(env="test")).current_id == "dev"


@settings(max_examples=50, deadline=None)
@given(
    traits=st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=4),
    text=st.text(min_size=1, max_size=50).filter(lambda t: t.strip() != ""),
)
def test_any_personal_value_round_trips(traits: dict[str, str], text: str) -> None:
    identify = parse_event({**_example("identify"), "properties": {"traits": traits, "bio": text}})
    key, _ = MASTERS.new_data_key(subject_of(identify) or "")
    doc, what = open_event(orjson.loads(seal_event(identify, key)), {key.subject: key})
    assert what == "opened"
    assert doc == orjson.loads(dump_event(identify))
