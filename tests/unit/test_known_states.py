"""The engine's memory of the customer rows it wrote (clm_stage_engine.known), pure."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from clm_domain.lifecycle import CustomerState, Stage
from clm_stage_engine.known import KnownStates

T = datetime(2026, 12, 1, tzinfo=UTC)


def state(customer_id: str, purchases: int = 0) -> CustomerState:
    return CustomerState(customer_id, Stage.REACH, T, T, T, "web", purchases=purchases)


def test_a_row_is_known_only_once_remembered_and_as_written() -> None:
    known = KnownStates(10)
    assert known.take(["a"]) == {}
    known.remember({"a": state("a", 2)}, xid=(7 << 32) + 1234)
    row = known.take(["a", "b"])["a"]
    assert row.state == state("a", 2)
    assert row.version == 1234  # a row's xmin: the transaction id's low 32 bits


def test_the_newer_transaction_wins_whatever_the_order_of_remembering() -> None:
    known = KnownStates(10)
    known.remember({"a": state("a", 3)}, xid=20)  # the later commit remembered first
    known.remember({"a": state("a", 2)}, xid=19)
    assert known.take(["a"])["a"].state.purchases == 3


def test_forget_and_clear() -> None:
    known = KnownStates(10)
    known.remember({"a": state("a"), "b": state("b")}, xid=5)
    known.forget(["a", "z"])
    assert set(known.take(["a", "b"])) == {"b"}
    known.clear()
    assert len(known) == 0


def test_size_zero_keeps_nothing() -> None:
    known = KnownStates(0)
    known.remember({"a": state("a")}, xid=5)
    assert known.take(["a"]) == {}


@given(st.lists(st.lists(st.sampled_from("abcdefgh"), max_size=4), max_size=30))
def test_the_least_recently_used_go_first_and_the_size_holds(batches: list[list[str]]) -> None:
    known = KnownStates(3)
    order: list[str] = []  # the model: least recent first
    for xid, batch in enumerate(batches, start=1):
        assert set(known.take(batch)) == {c for c in batch if c in order}
        for c in batch:  # a hit becomes the most recent
            if c in order:
                order.remove(c)
                order.append(c)
        written = {c: state(c) for c in batch}
        known.remember(written, xid=xid)
        for c in written:
            if c in order:
                order.remove(c)
            order.append(c)
        order = order[-3:]
        assert len(known) == len(order)
    assert set(known.take("abcdefgh")) == set(order)
