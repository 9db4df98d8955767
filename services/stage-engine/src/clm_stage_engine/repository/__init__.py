"""All SQL of the stage engine, one module a subject. Repositories never commit: the batch or
the request that calls them owns the transaction.

- :mod:`.batch`: a consumer batch's one read and one write;
- :mod:`.customers`: customers' rows and their history (reads, locks, upserts, merges, the
  sweeper's pick);
- :mod:`.events`: the event log read back for a rebuild;
- :mod:`.erasure`: erasure, anonymisation and their tombstones;
- :mod:`.outbox`: queueing lifecycle records and the relay's reads and deletes;
- :mod:`.webhooks`: subscriptions and deliveries;
- :mod:`.rows`: how a customer and a transition are stored (no SQL).
"""

from clm_stage_engine.repository.batch import (
    AnonymousIdBusy,
    BatchLookup,
    ClaimLost,
    StaleRows,
    lookup_batch,
    write_batch,
)
from clm_stage_engine.repository.customers import (
    absorb_profiles,
    count_by_stage,
    get_customer,
    get_history,
    insert_links,
    insert_transitions,
    list_customers,
    lock_customers,
    read_customer,
    read_customers,
    upsert_customers,
)
from clm_stage_engine.repository.erasure import anonymise_customer, erase_customer
from clm_stage_engine.repository.events import load_events
from clm_stage_engine.repository.outbox import insert_outbox
from clm_stage_engine.repository.rows import row_from_state, state_from_row
from clm_stage_engine.repository.webhooks import active_subscriptions, enqueue_deliveries

__all__ = [
    "AnonymousIdBusy",
    "BatchLookup",
    "ClaimLost",
    "StaleRows",
    "absorb_profiles",
    "active_subscriptions",
    "anonymise_customer",
    "count_by_stage",
    "enqueue_deliveries",
    "erase_customer",
    "get_customer",
    "get_history",
    "insert_links",
    "insert_outbox",
    "insert_transitions",
    "list_customers",
    "load_events",
    "lock_customers",
    "lookup_batch",
    "read_customer",
    "read_customers",
    "row_from_state",
    "state_from_row",
    "upsert_customers",
    "write_batch",
]
