"""The per-key token bucket, on a fake clock."""

from __future__ import annotations

from clm_ingest.ratelimit import TokenBuckets, retry_after_header


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_gets_its_burst_then_its_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=10, burst=20, clock=clock)
    assert buckets.take("k", 20) == 0
    wait = buckets.take("k", 5)
    assert wait == 0.5
    assert retry_after_header(wait) == "1"
    clock.now += 0.5
    assert buckets.take("k", 5) == 0
    assert buckets.take("other", 20) == 0  # keys do not share a bucket


def test_a_request_bigger_than_the_burst_waits_for_a_full_bucket() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=10, burst=20, clock=clock)
    assert buckets.take("k", 500) == 0
    assert buckets.take("k", 1) > 0
    clock.now += 2
    assert buckets.take("k", 500) == 0


def test_refusals_do_not_spend_tokens() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1, burst=2, clock=clock)
    assert buckets.take("k", 2) == 0
    assert buckets.take("k", 1) == 1.0
    assert buckets.take("k", 1) == 1.0
    clock.now += 1
    assert buckets.take("k", 1) == 0


def test_a_full_table_forgets_the_least_recently_used_bucket_only() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1, burst=2, clock=clock, max_keys=3)
    assert buckets.take("flooder", 2) == 0  # empty now
    assert buckets.take("a") == 0
    assert buckets.take("b") == 0
    assert buckets.take("flooder") > 0  # used last: kept
    assert buckets.take("c") == 0  # makes room by forgetting "a", not everything
    assert len(buckets) == 3
    assert buckets.take("flooder") > 0  # still empty: the table was not flushed
    assert buckets.wait("flooder") > 0


def test_wait_takes_nothing() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1, burst=1, clock=clock)
    assert buckets.wait("k") == 0
    assert buckets.wait("k") == 0
    assert buckets.take("k") == 0
    assert buckets.wait("k") == 1.0
