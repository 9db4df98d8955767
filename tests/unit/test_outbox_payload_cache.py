"""The relay's memory of the outbox rows this process committed (pure)."""

from __future__ import annotations

from clm_stage_engine.relay import PayloadCache


def test_rows_are_kept_until_published_or_found_gone() -> None:
    cache = PayloadCache()
    for row_id in (3, 5, 7):
        cache.put(row_id, f"p{row_id}".encode())
    kept = cache.snapshot()
    cache.forget([5])  # published
    assert kept == {3: b"p3", 5: b"p5", 7: b"p7"}  # a snapshot is not changed after
    assert cache.snapshot() == {3: b"p3", 7: b"p7"}
    cache.forget_older(7)  # the oldest pending is 7: row 3 went out through another relay
    assert cache.snapshot() == {7: b"p7"}
    cache.forget_older(None)  # nothing pending at all
    assert len(cache) == 0


def test_past_its_size_the_oldest_rows_go() -> None:
    cache = PayloadCache(max_bytes=10)
    for row_id in (10, 11, 12):
        cache.put(row_id, b"four")
    assert sorted(cache.snapshot()) == [11, 12]  # 8 bytes kept, 12 would be over
    cache.put(13, b"x" * 11)  # alone over the bound: not kept, and the others make way
    assert len(cache) == 0
    cache.put(14, b"four")
    cache.forget([14, 99])
    cache.put(15, b"0123456789")  # the forgotten row's bytes no longer count
    assert sorted(cache.snapshot()) == [15]
    empty = PayloadCache(max_bytes=0)
    empty.put(1, b"x")
    assert len(empty) == 0
