"""The loop's Prometheus metrics (labels: the consumer group, a partition, a bounded kind)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BATCHES = Counter("clm_consumer_batches_total", "Batches applied", ["group", "outcome"])
RECORDS = Counter("clm_consumer_records_total", "Records consumed", ["group", "outcome"])
BATCH_SECONDS = Histogram(
    "clm_consumer_batch_duration_seconds",
    "Time to apply one batch (transaction included)",
    ["group"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    "clm_consumer_batch_records",
    "Records per applied batch",
    ["group"],
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000),
)
LAG = Gauge("clm_consumer_lag_records", "Records behind the log end", ["group", "partition"])
DLQ = Counter("clm_dlq_records_total", "Records sent to the dead-letter topic", ["group"])
BISECTED = Counter(
    "clm_consumer_bisected_batches_total",
    "Batches split to find the records that fail them (a failure retrying cannot fix)",
    ["group"],
)
POISON = Counter(
    "clm_consumer_poison_total",
    "Records dead-lettered, by why: undecodable/handler (the handler said so), or the class "
    "of the failure they caused alone (data, integrity, limit, python)",
    ["group", "kind"],
)
STALLED = Gauge(
    "clm_consumer_stalled",
    "1 while a partition has lag and its offset has not advanced for the stall limit",
    ["group", "partition"],
)
