"""The micro-batch consumer loop both the stage engine and the metrics service run.

Commit policy (explicit, as arroyo and aiokafka's local-state example teach; the knobs are
:class:`BatchPolicy`):

* fetch up to ``max_records`` or wait ``max_wait_s``, whichever first (:mod:`.batching`);
* apply the batch in ONE Postgres transaction on the loop's own long-lived connection: the
  handler's effects and the compare-and-set of the consumed offsets (:mod:`clm_infra.offsets`)
  commit together, or nothing does (:mod:`.transactions`). A process may run several loops side
  by side (the stage engine's lanes), each its own member of the consumer group with its own
  partitions;
* records that cannot be decoded or applied go to the dead-letter topic (acknowledged before
  the transaction commits) with their reason in headers, and the partition moves on; more
  than ``max_consecutive_poison`` poison records in a row stop the loop loudly (:mod:`.dlq`);
* on assignment, seek every partition to the offset stored in Postgres; on revocation, wait
  for the batch in flight (:mod:`.rebalance`); Kafka's committed offsets are only a hint, sent
  after the commit without the next batch waiting for them (:mod:`.commit_hints`);
* a failing batch is rolled back, then retried, or bisected down to the records that fail
  alone when the failure is one retrying cannot fix (:mod:`.retry`, :mod:`.bisection`);
* a partition with lag that has not advanced for ``stall_s`` seconds is stalled: the
  ``clm_consumer_stalled`` gauge says so and the services' readiness fails (:mod:`.stalls`).

The loop (:mod:`.loop`) only wires these steps together.
"""

from clm_infra.consumer.dlq import PoisonLimitExceeded
from clm_infra.consumer.handler import BatchResult, Conflict, Handler, Poison
from clm_infra.consumer.loop import BatchConsumer
from clm_infra.consumer.metrics import (
    BATCH_SECONDS,
    BATCH_SIZE,
    BATCHES,
    BISECTED,
    DLQ,
    LAG,
    POISON,
    RECORDS,
    STALLED,
)
from clm_infra.consumer.policy import BatchPolicy
from clm_infra.consumer.readiness import stalled_loops
from clm_infra.consumer.retry import vars_of
from clm_infra.consumer.runner import run_batch_consumer

__all__ = [
    "BATCHES",
    "BATCH_SECONDS",
    "BATCH_SIZE",
    "BISECTED",
    "DLQ",
    "LAG",
    "POISON",
    "RECORDS",
    "STALLED",
    "BatchConsumer",
    "BatchPolicy",
    "BatchResult",
    "Conflict",
    "Handler",
    "Poison",
    "PoisonLimitExceeded",
    "run_batch_consumer",
    "stalled_loops",
    "vars_of",
]
