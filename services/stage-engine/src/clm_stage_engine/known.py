"""The customer rows this process last wrote, as it wrote them: a bounded LRU, pure.

A batch needs the current state of each of its customers. Most of them were written by this
same process a batch or a few ago (a customer's events share a partition), so the batch takes
them from here instead of reading them from Postgres; the others it reads. Either way the
batch's write checks each row's version — its ``xmin``, the id of the transaction that last
wrote it — and a row someone else changed since (the sweeper, the API's merge or erasure,
another replica after a rebalance, an anonymous event landing here from another partition)
fails the batch, which forgets its customers here and is retried, reading them again
(:class:`clm_stage_engine.repository.batch.StaleRows`). So an entry is a hint that is checked,
never trusted: a stale one costs a retry, not a wrong state.

Entries are added only once their batch committed (:attr:`BatchResult.committed`), with the
transaction's full 64-bit id (``pg_current_xact_id()``); a row's ``xmin`` is its low 32 bits.
Two lanes may commit the same customer in either order: the newer transaction's entry wins.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import Counter

from clm_domain.lifecycle import CustomerState

LOOKUPS = Counter(
    "clm_stage_engine_known_states_total",
    "Customers a batch needed, taken from the engine's memory (hit) or read (miss)",
    ["result"],
)

_XID_MASK = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Stored:
    """A customer's row: its state and its version (the row's ``xmin``, 32 bits)."""

    state: CustomerState
    version: int


class KnownStates:
    """Up to ``size`` customers' last written rows (0: none kept, every batch reads)."""

    __slots__ = ("_entries", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        # customer id → (its row as written, the writing transaction's 64-bit id)
        self._entries: OrderedDict[str, tuple[Stored, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, ids: Collection[str]) -> dict[str, Stored]:
        """The known rows of ``ids`` (the others must be read), each now the most recent."""
        out: dict[str, Stored] = {}
        entries = self._entries
        for customer_id in ids:
            entry = entries.get(customer_id)
            if entry is not None:
                entries.move_to_end(customer_id)
                out[customer_id] = entry[0]
        LOOKUPS.labels("hit").inc(len(out))
        LOOKUPS.labels("miss").inc(len(ids) - len(out))
        return out

    def remember(self, states: Mapping[str, CustomerState], xid: int) -> None:
        """``states`` (by customer id) were written by the committed transaction ``xid``
        (64-bit); a customer already known from a newer transaction keeps that entry."""
        if self.size <= 0:
            return
        entries = self._entries
        version = xid & _XID_MASK
        for key, state in states.items():
            known = entries.get(key)
            if known is not None:
                if known[1] > xid:
                    continue
                entries.move_to_end(key)  # a new key goes in last anyway
            entries[key] = (Stored(state, version), xid)
        while len(entries) > self.size:
            entries.popitem(last=False)

    def forget(self, ids: Iterable[str]) -> None:
        for customer_id in ids:
            self._entries.pop(customer_id, None)

    def clear(self) -> None:
        self._entries.clear()
