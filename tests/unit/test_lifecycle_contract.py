"""The lifecycle record contract (``clm_domain.lifecycle_records``): the records the stage
engine's own producers make fit the types and the committed JSON Schemas, survive
``decode``/``encode`` unchanged, and ``decode`` refuses what is not a record, naming the field."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast, get_args

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker  # type: ignore[import-untyped]

from clm_domain.events import Event, dump_event, parse_event
from clm_domain.lifecycle import CustomerState, Stage, Transition, advance, apply_event
from clm_domain.lifecycle_records import (
    KINDS,
    SCHEMA_V1,
    SCHEMA_V2,
    SCHEMAS,
    BadRecord,
    Facts,
    LifecycleRecord,
    Move,
    RestatementRecord,
    SchemaName,
    TimelineItem,
    TimeRecord,
    as_datetime,
    as_decimal,
    decode,
    encode,
    event_json,
    main,
    record_adapter,
    schema_files,
    slim_event,
)
from clm_domain.rules import LifecycleRules
from clm_stage_engine.processor import counted, fold_timeline
from clm_stage_engine.records import (
    FACT_FIELDS,
    customer_facts,
    lifecycle_record,
    merge_record,
    move_doc,
    removal_record,
    restatement_records,
)
from clm_stage_engine.usecases.sweep import time_record as sweeper_time_record
from tests.factories import event_doc

ROOT = Path(__file__).resolve().parents[2]
RULES = LifecycleRules()
T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


def _aware_date_time(value: object) -> bool:
    """ISO 8601 with an offset (jsonschema checks ``date-time`` only with an extra package)."""
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


FORMATS = FormatChecker()
FORMATS.checks("date-time", raises=ValueError)(_aware_date_time)


def validator(schema: str) -> Draft202012Validator:
    doc = orjson.loads((ROOT / "deploy/schemas" / f"{schema}.schema.json").read_bytes())
    Draft202012Validator.check_schema(doc)
    return Draft202012Validator(doc, format_checker=FORMATS)


V1, V2 = validator(SCHEMA_V1), validator(SCHEMA_V2)
VALIDATORS = {SCHEMA_V1: V1, SCHEMA_V2: V2}
ADAPTERS = {schema: record_adapter(schema) for schema in SCHEMAS}


def errors(raw: bytes) -> list[str]:
    """What the record's own schema version finds wrong with it (JSON Schema, then types)."""
    doc = orjson.loads(raw)
    found = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in VALIDATORS[doc["schema"]].iter_errors(doc)
    ]
    if not found:
        ADAPTERS[doc["schema"]].validate_python(doc)
    return found


def ev(type_: str, day: float = 0, **kw: Any) -> Event:
    at = (T0 + timedelta(days=day)).isoformat()
    return parse_event(event_doc(type_, occurred_at=at, **kw))


def fold(events: Sequence[Event]) -> list[bytes]:
    """Every record the stage engine publishes for these events, applied in order."""
    out, state = [], None
    for event in events:
        applied = apply_event(state, event, RULES) if event.type != "marketing_spend" else None
        out.append(lifecycle_record(event, state, applied))
        state = applied.state if applied is not None else state
    return out


def state_after(events: Sequence[Event]) -> CustomerState:
    state = None
    for event in events:
        state = apply_event(state, event, RULES).state
    assert state is not None
    return state


def time_record(before: CustomerState, now: datetime) -> bytes:
    """A sweeper record, by the sweeper's own builder."""
    after, moves = advance(before, now, RULES)
    assert moves
    return encode(sweeper_time_record(before, after, moves))


BUYER_MOVE = Transition("c", None, Stage.REACH, T0, "e", "first touch")
JOURNEY = [
    ev("ad_click", 0, channel="paid_search"),
    ev("site_visit", 1),
    ev("signup", 2),
    ev("purchase", 3),
    ev("support_ticket", 4, status="opened"),
    ev("purchase", 250),  # at risk and churned on the way, then reactivated
    ev("review", 251, rating=5, text="great"),
    ev("marketing_spend", 251, customer_id=None),
]
BUYER = state_after(JOURNEY[:4])
B_SIGNUP = ev("signup", 0, customer_id="b", event_id="b1")


def producer_records() -> dict[str, bytes]:
    """One record of every v1 kind (and several event records), by the real producers."""
    late = ev("purchase", -1, event_id="late")
    merged = state_after([*JOURNEY[:4], late])
    records = {
        f"event {i} {e.type}": r
        for i, (e, r) in enumerate(zip(JOURNEY, fold(JOURNEY), strict=True))
    }
    return {
        **records,
        "time": time_record(BUYER, T0 + timedelta(days=200)),
        "identity_merge": removal_record(
            "identity_merge", "anon-1>cust-1", "anon-1", "reach", merged_into="cust-1"
        ),
        "erasure erase": removal_record(
            "erasure",
            "d1g3st",
            "cust-1",
            "retention",
            mode="erase",
            pseudonym=None,
            stage_after=None,
        ),
        "erasure anonymise": removal_record(
            "erasure",
            "d1g3st",
            "cust-1",
            "retention",
            mode="anonymise",
            pseudonym="anon:5f1c",
            stage_after="retention",
        ),
        "customer_merge": merge_record(
            "cust-1",
            "b",
            BUYER,
            merged,
            Transition("cust-1", Stage.CONVERSION, Stage.RETENTION, T0, "", "customer merge"),
            T0 + timedelta(days=5),
        ),
        "customer_merge still": merge_record("cust-1", "b", BUYER, BUYER, None, T0),
        # v1 only: no longer produced, still read (the shape the v1 engine wrote)
        "correction": orjson.dumps(
            {
                "schema": SCHEMA_V1,
                "kind": "correction",
                "record_id": "correction:shop:e3@shop:late",
                "customer_id": "cust-1",
                "reason": "late event",
                "event": None,
                "customer": customer_facts(merged),
                "stage_before": None,
                "stage_after": None,
                "transition": None,
                "transitions": [],
                "first_purchase": False,
                "repeat_purchase": True,
                "reactivation": False,
                "corrected": {
                    "event": orjson.loads(dump_event(JOURNEY[3])),
                    "customer": customer_facts(BUYER),
                    "first_purchase": True,
                    "repeat_purchase": False,
                    "reactivation": False,
                },
            }
        ),
    }


PRODUCED = producer_records()


def item(record: bytes) -> TimelineItem:
    """A timeline item from an event record (its body, the event slimmed), as the spec says."""
    doc = orjson.loads(record)
    return {
        "event": slim_event(doc["event"]) if doc["event"] is not None else None,
        "customer": doc["customer"],
        "stage_before": doc["stage_before"],
        "stage_before_entered_at": doc["stage_before_entered_at"],
        "transitions": doc["transitions"],
        "first_purchase": doc["first_purchase"],
        "repeat_purchase": doc["repeat_purchase"],
        "reactivation": doc["reactivation"],
    }


def restatements() -> dict[str, bytes]:
    """v2 examples made as the v2 design describes them: a late event, an erasure (with the
    event part) in two parts, a merge, and v2 records of the other kinds marked restated."""
    before, after = fold(JOURNEY[:4]), fold([ev("purchase", -1, event_id="late"), *JOURNEY[:4]])
    sweep = orjson.loads(time_record(BUYER, T0 + timedelta(days=200)))
    sweep_item: TimelineItem = {
        "event": None,
        "customer": sweep["customer"],
        "stage_before": sweep["stage_before"],
        "stage_before_entered_at": sweep["stage_before_entered_at"],
        "transitions": sweep["transitions"],
        "first_purchase": False,
        "repeat_purchase": False,
        "reactivation": False,
    }
    at = T0 + timedelta(days=9)
    late: RestatementRecord = {
        "schema": SCHEMA_V2,
        "kind": "restatement",
        "record_id": "restatement:cust-1@shop:late#0",
        "customer_id": "cust-1",
        "reason": "late event",
        "cause": "shop:late",
        "part": 0,
        "parts": 1,
        "events_too": False,
        "retract": [
            {"customer_id": "cust-1", "stage": "conversion", "items": [*map(item, before)]}
        ],
        "add": [{"customer_id": "cust-1", "stage": "conversion", "items": [*map(item, after)]}],
        "event": None,
        "at": at,
    }
    erasure: list[RestatementRecord] = [
        {
            **late,
            "record_id": f"restatement:cust-1@erasure:d1g3st#{part}",
            "reason": "erasure",
            "cause": "erasure:d1g3st",
            "part": part,
            "parts": 2,
            "events_too": True,
            "retract": [{"customer_id": "cust-1", "stage": stage, "items": items}],
            "add": [],
        }
        for part, stage, items in [
            (0, "at_risk", [*map(item, before)]),
            (1, None, [sweep_item]),
        ]
    ]
    merge: RestatementRecord = {
        **late,
        "record_id": "restatement:cust-1@merge:b>cust-1#0",
        "reason": "customer merge",
        "cause": "merge:b>cust-1",
        "retract": [
            late["retract"][0],
            {"customer_id": "b", "stage": "acquisition", "items": [*map(item, fold([B_SIGNUP]))]},
        ],
    }
    restated = {
        f"v2 {name}": orjson.dumps({**orjson.loads(raw), "schema": SCHEMA_V2, "restated": True})
        for name, raw in PRODUCED.items()
        if "correction" not in name
    }
    old = counted([("cust-1", BUYER, JOURNEY[:4])], RULES)
    now, _ = fold_timeline(
        "cust-1", [ev("purchase", -1, event_id="late"), *JOURNEY[:4]], RULES, until=at
    )
    produced = restatement_records(
        "cust-1", cause="shop:late", reason="late event", retract=old, add=[now], at=at
    )
    return {
        "restatement produced": produced[0],
        "restatement late": encode(late),
        "restatement erasure 0": encode(erasure[0]),
        "restatement erasure 1": encode(erasure[1]),
        "restatement merge": encode(merge),
        **restated,
    }


RESTATED = restatements()
#: The same shapes as a v1 engine wrote them (no ``restated``), which consumers still read.
AS_V1 = {
    f"v1 {name}": orjson.dumps(
        {k: v for k, v in orjson.loads(raw).items() if k != "restated"} | {"schema": SCHEMA_V1}
    )
    for name, raw in PRODUCED.items()
}
ALL = {**PRODUCED, **RESTATED, **AS_V1}


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_record_fits_its_version_of_the_schema_and_the_types(name: str) -> None:
    assert errors(ALL[name]) == []


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_record_survives_decode_and_encode_unchanged(name: str) -> None:
    raw = ALL[name]
    record = decode(raw)
    assert record == orjson.loads(raw)
    assert encode(record) == raw


def test_the_examples_cover_every_kind_of_both_versions() -> None:
    kinds: dict[str, set[str]] = {SCHEMA_V1: set(), SCHEMA_V2: set()}
    for raw in ALL.values():
        doc = orjson.loads(raw)
        kinds[doc["schema"]].add(doc["kind"])
    assert kinds == {schema: set(k) for schema, k in KINDS.items()}


def test_the_committed_schemas_are_what_the_types_make_now() -> None:
    """Regenerate with ``python -m clm_domain.lifecycle_records --schema`` after a change."""
    for name, text in schema_files().items():
        assert (ROOT / "deploy/schemas" / name).read_text() == text, name


def test_the_generator_writes_the_schema_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--schema", str(tmp_path / "out")]) == 0
    written = {p.name: p.read_text() for p in (tmp_path / "out").iterdir()}
    assert written == schema_files()
    assert sorted(written) == ["clm.lifecycle.v1.schema.json", "clm.lifecycle.v2.schema.json"]
    assert "wrote" in capsys.readouterr().out


def test_the_types_follow_the_reducer_and_the_stages() -> None:
    assert tuple(Facts.__annotations__) == FACT_FIELDS
    assert not Facts.__optional_keys__
    assert set(Move.__annotations__) == set(move_doc(BUYER_MOVE))
    assert get_args(SchemaName) == SCHEMAS == (SCHEMA_V1, SCHEMA_V2)
    assert {f.name for f in fields(CustomerState)} - set(FACT_FIELDS) == {
        "last_event_source",
        "last_event_id",
        "recent_visits",
        "recent_purchases",
        "purchase_days",
        "repeat_spend",
        "purchase_currency",
    }
    stages = V2.schema["$defs"]["Move"]["properties"]["to"]["enum"]
    assert stages == [s.value for s in Stage]


def test_each_version_refuses_the_other_versions_own_kind() -> None:
    correction = orjson.loads(PRODUCED["correction"])
    restatement = orjson.loads(RESTATED["restatement late"])
    assert list(V2.iter_errors({**correction, "schema": SCHEMA_V2}))
    assert list(V1.iter_errors({**restatement, "schema": SCHEMA_V1}))
    assert list(V1.iter_errors({**orjson.loads(PRODUCED["time"]), "schema": SCHEMA_V2}))


@pytest.mark.parametrize(
    ("name", "path", "value"),
    [
        ("event 3 purchase", ("stage_after",), "purchase"),  # an alias, not a stage
        ("event 3 purchase", ("customer", "revenue"), 59.9),  # money is text
        ("event 3 purchase", ("transitions", 0, "at"), "2026-01-08 09:30"),  # no offset
        ("time", ("event",), {}),
        ("erasure erase", ("mode",), "forget"),
        ("restatement late", ("retract", 0, "items", 0, "customer"), None),
    ],
)
def test_the_schema_is_not_vacuous(name: str, path: tuple[str | int, ...], value: Any) -> None:
    doc = orjson.loads(ALL[name])
    assert errors(orjson.dumps(doc)) == []
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    assert errors(orjson.dumps(doc)) != []


@pytest.mark.parametrize(
    ("change", "drop", "field", "says"),
    [
        ({"schema": "clm.lifecycle.v9"}, "", "schema", "'clm.lifecycle.v9' is not one of"),
        ({}, "schema", "schema", "None is not one of clm.lifecycle.v1, clm.lifecycle.v2"),
        ({"kind": "restatement"}, "", "kind", "'restatement' is not a clm.lifecycle.v1 kind"),
        ({"kind": ["event"]}, "", "kind", "['event'] is not a clm.lifecycle.v1 kind"),
        ({}, "merged_into", "merged_into", "missing from a clm.lifecycle.v1 identity_merge"),
        ({}, "record_id", "record_id", "missing from a clm.lifecycle.v1 identity_merge"),
    ],
)
def test_decode_refuses_what_is_not_a_record_naming_the_field(
    change: dict[str, Any], drop: str, field: str, says: str
) -> None:
    doc = {**orjson.loads(AS_V1["v1 identity_merge"]), **change}
    doc.pop(drop, None)
    with pytest.raises(BadRecord, match=f"^{field}: ") as caught:
        decode(orjson.dumps(doc))
    assert caught.value.field == field
    assert says in str(caught.value)
    assert isinstance(caught.value, ValueError)  # the metrics handler's poison path


def test_decode_refuses_a_v2_correction_and_a_v1_restatement() -> None:
    correction = orjson.loads(PRODUCED["correction"])
    with pytest.raises(BadRecord, match=r"'correction' is not a clm\.lifecycle\.v2 kind"):
        decode(orjson.dumps({**correction, "schema": SCHEMA_V2}))
    with pytest.raises(BadRecord, match=r"'restatement' is not a clm\.lifecycle\.v1 kind"):
        decode(orjson.dumps({**orjson.loads(RESTATED["restatement late"]), "schema": SCHEMA_V1}))


@pytest.mark.parametrize(("raw", "says"), [(b"{", "not JSON"), (b"[1]", "not a JSON object")])
def test_decode_refuses_what_is_not_a_json_object(raw: bytes, says: str) -> None:
    with pytest.raises(BadRecord, match=f"^record: {says}"):
        decode(raw)


def test_decode_accepts_what_a_later_compatible_change_adds() -> None:
    doc = orjson.loads(PRODUCED["event 3 purchase"])
    assert decode(orjson.dumps({**doc, "new_field": 1}))["record_id"] == doc["record_id"]
    assert errors(orjson.dumps({**doc, "new_field": 1})) == []


def test_encode_writes_times_money_and_stages_as_text_and_events_as_they_came() -> None:
    after, moves = advance(BUYER, T0 + timedelta(days=200), RULES)
    record: TimeRecord = {
        "schema": SCHEMA_V2,
        "kind": "time",
        "record_id": "time:x",
        "customer_id": after.customer_id,
        "event": None,
        "customer": cast(Facts, {**customer_facts(after), "revenue": Decimal("59.90")}),
        "stage_before": BUYER.stage,
        "stage_before_entered_at": BUYER.stage_entered_at,
        "stage_after": after.stage,
        "transition": move_doc(moves[-1]),
        "transitions": [],
        "first_purchase": False,
        "repeat_purchase": False,
        "reactivation": False,
    }
    back = decode(encode(record))
    assert back["kind"] == "time"
    assert back["customer"]["revenue"] == "59.90"
    assert back["stage_before"] == "conversion"
    assert back["stage_before_entered_at"] == BUYER.stage_entered_at.isoformat()
    assert as_datetime(back["transition"]["at"]) == moves[-1].at
    assert as_decimal(back["customer"]["revenue"]) == Decimal("59.90")
    assert errors(encode(record)) == []

    produced = decode(PRODUCED["event 3 purchase"])
    assert produced["kind"] == "event"
    produced["event"] = event_json(dump_event(JOURNEY[3]))  # as the engine passes it
    assert encode(produced) == PRODUCED["event 3 purchase"]


def test_a_slim_event_keeps_the_envelope_and_only_what_counting_reads() -> None:
    doc = orjson.loads(dump_event(ev("support_ticket", 1, status="opened", csat=4)))
    slim = slim_event(doc)
    assert slim["properties"] == {"status": "opened", "csat": 4, "ticket_id": "t-1"}
    assert {k: v for k, v in slim.items() if k != "properties"} == {
        k: v for k, v in doc.items() if k != "properties"
    }
    purchase = slim_event(orjson.loads(dump_event(JOURNEY[3])))
    assert purchase["properties"] == {"amount": "59.90", "currency": "EUR"}


STEP_TYPES: list[tuple[str, dict[str, Any]]] = [
    ("site_visit", {}),
    ("ad_click", {"channel": "social"}),
    ("signup", {}),
    ("identify", {"traits": {"email": "x@y.z"}}),
    ("purchase", {}),
    ("purchase", {"amount": "5.00", "currency": "USD"}),
    ("refund", {}),
    ("review", {"rating": 5}),
    ("nps_response", {"score": 10}),
    ("referral", {}),
    ("support_ticket", {"status": "opened"}),
    ("support_ticket", {"status": "solved", "csat": 2}),
    ("subscription_cancelled", {}),
    ("email_engagement", {}),
    ("marketing_spend", {"customer_id": None}),
]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(range(len(STEP_TYPES))), st.integers(0, 400)), max_size=12),
    st.integers(1, 500),
)
def test_any_journey_makes_records_that_fit_and_survive_decoding(
    picks: list[tuple[int, int]], sweep_day: int
) -> None:
    events = []
    for n, (i, day) in enumerate(sorted(picks, key=lambda p: p[1])):
        type_, props = STEP_TYPES[i]
        events.append(ev(type_, day, event_id=f"e{n}", **props))
    records: list[bytes] = fold(events)
    customers = [e for e in events if e.type != "marketing_spend"]
    if customers:
        last = state_after(customers)
        if advance(last, last.last_seen_at + timedelta(days=sweep_day), RULES)[1]:
            records.append(time_record(last, last.last_seen_at + timedelta(days=sweep_day)))
    for raw in records:
        assert errors(raw) == []
        record: LifecycleRecord = decode(raw)
        assert encode(record) == raw
        upgraded = copy.deepcopy(dict(record))
        upgraded.update(schema=SCHEMA_V2, restated=False)
        assert errors(orjson.dumps(upgraded)) == []


DOC = (ROOT / "docs/lifecycle-records.md").read_text()
DOC_EXAMPLES = re.findall(r"^### `(\w+)`.*?^```json\n(.*?)^```$", DOC, re.MULTILINE | re.DOTALL)


def test_the_docs_show_an_example_of_every_kind() -> None:
    assert sorted(kind for kind, _ in DOC_EXAMPLES) == sorted(KINDS[SCHEMA_V1] | KINDS[SCHEMA_V2])


@pytest.mark.parametrize(("kind", "text"), DOC_EXAMPLES, ids=[k for k, _ in DOC_EXAMPLES])
def test_every_example_in_the_docs_is_a_valid_record(kind: str, text: str) -> None:
    raw = orjson.dumps(orjson.loads(text))
    assert errors(raw) == []
    assert decode(raw)["kind"] == kind
