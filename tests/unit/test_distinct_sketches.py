"""The distinct-count sketches: exact up to ``SPARSE_MAX`` ids, HyperLogLog past that."""

from __future__ import annotations

import hashlib
import itertools
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clm_metrics import hll

ids = st.text(min_size=1, max_size=12)


def reference_registers(items: list[str]) -> hll.Registers:
    """HyperLogLog registers one id at a time, the textbook way (integers, no numpy)."""
    registers = hll.empty_registers()
    for item in items:
        h = int.from_bytes(hashlib.blake2b(item.encode(), digest_size=8).digest(), "big")
        index, rest = h >> hll.Q, h & ((1 << hll.Q) - 1)
        registers[index] = max(int(registers[index]), hll.Q - rest.bit_length() + 1)
    return registers


@given(st.lists(st.lists(ids, max_size=40), max_size=6))
def test_a_union_of_few_ids_is_counted_exactly_whatever_the_parts(parts: list[list[str]]) -> None:
    sketches = [hll.loads(hll.dumps(hll.add(hll.empty(), part))) for part in parts]
    merged = hll.merge(sketches)
    assert merged.exact
    assert hll.estimate(merged) == len({i for part in parts for i in part})
    assert hll.merge([merged, *reversed(sketches)]) == merged


def test_32_ids_that_share_a_register_still_count_32() -> None:
    # a bare HyperLogLog reads 31 for one set of 32 ids in ~30: two of them share a register
    for run in itertools.count():
        items = [f"customer-{run}-{i}" for i in range(32)]
        if np.count_nonzero(reference_registers(items)) < 32:
            break
    assert hll.estimate(hll.Sketch(registers=reference_registers(items))) == 31
    assert hll.estimate(hll.add(hll.empty(), items)) == 32


def test_past_the_exact_limit_a_sketch_holds_the_registers_of_its_ids() -> None:
    items = [f"v{i}" for i in range(hll.SPARSE_MAX + 1)]
    exact = hll.add(hll.empty(), items[:-1])
    assert exact.exact
    assert hll.estimate(exact) == hll.SPARSE_MAX
    assert hll.raise_to(exact, items[-1:])  # one more: registers
    assert not exact.exact
    assert exact.registers is not None
    assert (exact.registers == reference_registers(items)).all()
    assert hll.loads(hll.dumps(exact)) == exact


@given(st.lists(ids, max_size=60), st.integers(min_value=0, max_value=hll.SPARSE_MAX))
def test_exact_and_registers_merge_in_either_order(few: list[str], start: int) -> None:
    many = [f"m{i}" for i in range(start, start + hll.SPARSE_MAX + 5)]
    dense = hll.add(hll.empty(), many)
    exact = hll.add(hll.empty(), few)
    expected = reference_registers(many + few)
    for merged in (hll.merge([dense, exact]), hll.merge([exact, dense])):
        assert not merged.exact
        assert merged.registers is not None
        assert (merged.registers == expected).all()
    assert hll.estimate(exact) == len(set(few))  # the parts stay as they were
    assert dense.registers is not None
    assert (dense.registers == reference_registers(many)).all()


def test_registers_stored_before_exact_sketches_still_load() -> None:
    registers = reference_registers(["a", "b", "c"])
    old = zlib.compress(registers.tobytes(), 1)
    loaded = hll.loads(old)
    assert not loaded.exact
    assert hll.estimate(loaded) == 3
    assert hll.dumps(loaded) == old


@pytest.mark.parametrize("n", [0, 1, 7, 100, 1_024, 2_000, 50_000])
def test_distinct_count_sketch_is_within_two_percent(n: int) -> None:
    halves = [hll.add(hll.empty(), (f"v{i}" for i in range(k, n, 2))) for k in (0, 1)]
    blobs = [hll.dumps(h) for h in halves]
    merged = hll.merge(hll.loads(b) for b in blobs)
    estimate = hll.estimate(merged)
    if n <= hll.SPARSE_MAX:
        assert estimate == n
    assert abs(estimate - n) <= 0.02 * n
    assert hll.estimate(hll.merge([merged, merged])) == estimate


@pytest.mark.parametrize("n", [100, 5_000])
def test_a_sketch_says_whether_adding_changed_it(n: int) -> None:
    sketch = hll.empty()
    assert hll.raise_to(sketch, [f"v{i}" for i in range(n)])
    before = sketch.copy()
    assert not hll.raise_to(sketch, [f"v{i}" for i in range(n)])  # all seen before
    assert not hll.raise_to(sketch, [])
    assert sketch == before
    assert hll.raise_to(sketch, ["someone new", *(f"v{i}" for i in range(n))]) == (sketch != before)
    if sketch.exact:
        assert sketch != before


def test_sketches_written_last_are_reused_only_for_the_same_bytes() -> None:
    last = hll.LastWritten(max_rows=2)
    sketch = hll.add(hll.empty(), ["a", "b"])
    blob = hll.dumps(sketch)
    last.wrote("r1", blob, sketch)
    again = last.loads("r1", blob)
    assert again == sketch
    hll.raise_to(again, [f"x{i}" for i in range(50)])  # a copy: what is kept stays
    assert last.loads("r1", blob) == sketch
    other = hll.dumps(hll.add(hll.empty(), ["c"]))  # someone else wrote the row since
    assert last.loads("r1", other) == hll.loads(other)
    last.wrote("r2", blob, sketch)
    last.wrote("r3", blob, sketch)  # over max_rows: r1, the oldest written, goes
    assert list(last._rows) == ["r2", "r3"]
    unkept = hll.LastWritten(max_rows=0)
    unkept.wrote("r1", blob, sketch)
    assert not unkept._rows
