"""The outbox row's blob: a write's records, in order, and nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clm_stage_engine.outbox import pack_records, unpack_records

RECORDS = st.lists(st.tuples(st.text(max_size=30), st.binary(max_size=200)), min_size=1)


@given(records=RECORDS)
def test_a_blob_gives_back_its_records_in_order(records: list[tuple[str, bytes]]) -> None:
    blob = pack_records(records)
    assert list(unpack_records(blob, len(records))) == [(k.encode(), v) for k, v in records]


@given(records=RECORDS, cut=st.integers(min_value=1, max_value=50))
def test_a_cut_or_padded_blob_is_refused(records: list[tuple[str, bytes]], cut: int) -> None:
    blob = pack_records(records)
    with pytest.raises(ValueError, match="outbox blob"):
        list(unpack_records(blob[:-cut], len(records)))
    with pytest.raises(ValueError, match="outbox blob"):
        list(unpack_records(blob + b"\0" * cut, len(records)))


def test_a_blob_read_with_another_count_is_refused() -> None:
    blob = pack_records([("c1", b"one"), ("c2", b"two")])
    for count in (0, 1, 3):
        with pytest.raises(ValueError, match="outbox blob"):
            list(unpack_records(blob, count))
