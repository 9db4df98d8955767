"""The outbox relay picks the partition aiokafka's ``send()`` would pick for a key."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from clm_stage_engine.relay import key_hash


@given(key=st.text(min_size=1, max_size=40), count=st.integers(min_value=1, max_value=64))
def test_the_relay_partitions_like_the_producer(key: str, count: int) -> None:
    partitions = list(range(count))
    expected = DefaultPartitioner()(key.encode(), partitions, None)
    assert partitions[key_hash(key.encode()) % count] == expected
