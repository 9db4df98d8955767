"""Exact distinct counts (pure): Roaring bitmaps of customer numbers, per bucket.

Every customer (or anonymous profile) id the metrics service counts has a dense integer number
(``metrics_customer_numbers``); a distinct-count bucket row holds the numbers of the ids it saw
as a Roaring bitmap (a sorted array, a bitset or runs per 2¹⁶ numbers, whichever is smallest),
stored as bytea in its portable serialization. A window's count is the size of the OR of its
buckets' bitmaps: exact at any size, and a window reads one row per bucket as the sketches did.

Rows per bucket (``kpi_distinct``): ``visitors`` (site visits), ``purchasers`` (customers with
an order in the bucket) and ``repeat_purchasers`` (customers with two or more orders in the
bucket: a subset of its purchasers). A window's repeat purchasers — customers with two or more
orders in the window — are those in any bucket's ``repeat_purchasers`` or in two buckets'
``purchasers``; folding the buckets in any order::

    twice |= repeat_b | (seen & purchasers_b);  seen |= purchasers_b

(:meth:`Distinct.plus`), which is associative and commutative, so closed segments can be
folded once, cached and combined with the open part.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pyroaring import BitMap

#: The distinct-count rows of a bucket.
METRICS = ("visitors", "purchasers", "repeat_purchasers")


def dumps(bitmap: BitMap) -> bytes:
    """The portable Roaring serialization (readable by CRoaring, RoaringBitmap in Java/Go)."""
    bitmap.run_optimize()
    return bytes(bitmap.serialize())


def loads(blob: bytes) -> BitMap:
    return BitMap.deserialize(blob)


@dataclass(slots=True)
class Distinct:
    """A window's (or a disjoint part's) distinct sets: every visitor, every purchaser
    (``seen``) and every customer with two or more orders (``twice``)."""

    visitors: BitMap = field(default_factory=BitMap)
    purchasers: BitMap = field(default_factory=BitMap)
    repeat_purchasers: BitMap = field(default_factory=BitMap)

    def plus(self, other: Distinct) -> Distinct:
        """The distinct sets of both parts together (the parts cover disjoint times); a new
        value: both stay as they are."""
        return Distinct(
            self.visitors | other.visitors,
            self.purchasers | other.purchasers,
            self.repeat_purchasers | other.repeat_purchasers | (self.purchasers & other.purchasers),
        )

    def counts(self) -> dict[str, int]:
        return {
            "visitors": len(self.visitors),
            "purchasers": len(self.purchasers),
            "repeat_purchasers": len(self.repeat_purchasers),
        }


def combine(parts: Iterable[Distinct]) -> Distinct:
    """The parts' distinct sets together (parts of disjoint times)."""
    out = Distinct()
    for part in parts:
        out = out.plus(part)
    return out


def from_buckets(rows: Iterable[tuple[object, str, BitMap]]) -> Distinct:
    """The distinct sets of a window from its bucket rows ``(bucket, metric, bitmap)`` (one
    row per bucket and metric; buckets of disjoint times)."""
    per_bucket: dict[object, Distinct] = {}
    for bucket, metric, bitmap in rows:
        part = per_bucket.setdefault(bucket, Distinct())
        setattr(part, metric, bitmap)
    return combine(per_bucket.values())


def add_orders(
    purchasers: BitMap, repeat_purchasers: BitMap, orders: Mapping[int, int]
) -> tuple[bool, bool]:
    """Add one bucket's new orders (customer number → how many orders) to its purchasers and
    repeat purchasers, in place: a customer with an order before, or two now, has two or
    more. Whether each set changed."""
    new = BitMap(orders)
    twice = BitMap(n for n, count in orders.items() if count >= 2) | (purchasers & new)
    grew_repeat = not twice.issubset(repeat_purchasers)
    grew_purchasers = not new.issubset(purchasers)
    purchasers |= new
    repeat_purchasers |= twice
    return grew_purchasers, grew_repeat


def add_visitors(visitors: BitMap, numbers: Iterable[int]) -> bool:
    """Add the numbers in place; whether the set changed."""
    new = BitMap(numbers)
    grew = not new.issubset(visitors)
    visitors |= new
    return grew


class NumberCache:
    """Customer numbers already read, by id: at most ``max_ids`` of them (about 10 MB at the
    default), the least recently used dropped first. A committed number never changes, and
    the sequence never hands it out again; an id that leaves (erased, merged) is forgotten by
    the replica that applies its record. Another replica may still hold it, which matters only
    if a record names the id again: after a merge records carry the survivor's id, after an
    erasure the stage engine drops the customer's events."""

    def __init__(self, max_ids: int = 50_000) -> None:
        self._max = max_ids
        self._numbers: OrderedDict[str, int] = OrderedDict()

    def get(self, who: str) -> int | None:
        number = self._numbers.get(who)
        if number is not None:
            self._numbers.move_to_end(who)
        return number

    def forget(self, who: str) -> None:
        self._numbers.pop(who, None)

    def put(self, who: str, number: int) -> None:
        if self._max <= 0:
            return
        self._numbers[who] = number
        self._numbers.move_to_end(who)
        while len(self._numbers) > self._max:
            self._numbers.popitem(last=False)


def remove_and_move(
    sets: Mapping[str, BitMap], erased: Iterable[int], moved: Mapping[int, int]
) -> set[str]:
    """One bucket's rows (metric → bitmap, changed in place): the ``erased`` numbers cleared,
    each ``moved`` number (a merged profile) replaced by its survivor's. A survivor has two or
    more orders in the bucket when its own and its merged profiles' orders there add up to two
    (a purchaser counts one, a repeat purchaser two): it was a purchaser and one merged profile
    was, two merged profiles were, or one was a repeat purchaser (``sets`` has a
    ``repeat_purchasers`` entry, empty if need be, wherever it has ``purchasers``). ``moved``
    maps a profile to its final survivor (no chains). The metrics whose sets changed."""
    gone = BitMap(erased)
    changed: set[str] = set()
    purchasers = sets.get("purchasers", BitMap())
    repeat = sets.get("repeat_purchasers", BitMap())

    def orders_of(n: int) -> int:  # at least this many orders in the bucket (capped at 2)
        return 2 if n in repeat else 1 if n in purchasers else 0

    orders: dict[int, int] = {}
    for old, into in moved.items():
        if old in purchasers:
            orders[into] = orders.get(into, orders_of(into)) + orders_of(old)
    twice = BitMap(into for into, n in orders.items() if n >= 2)
    for metric, members in sets.items():
        before = BitMap(members)
        for old, into in moved.items():
            if old in members:
                members.discard(old)
                members.add(into)
        if metric == "repeat_purchasers":
            members |= twice
        members -= gone
        if members != before:
            changed.add(metric)
    return changed
