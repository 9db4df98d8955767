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
