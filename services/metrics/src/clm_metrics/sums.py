"""A window's totals (pure): ``Totals`` maps ``(metric, source, channel, currency)`` to the sum
of that metric's buckets, and :class:`MetricSums` indexes them by metric and currency."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from clm_metrics.tickets import LEVEL

TotalsKey = tuple[str, str, str, str]
Totals = Mapping[TotalsKey, Decimal]
ZERO = Decimal(0)

#: What the all-time totals are read for: current stages, open tickets, historical CLV.
ALL_TIME_METRICS = ("customer_revenue", "new_customers", LEVEL)
#: Metrics summed up to an instant for a level there (besides the flows: stage counts).
LEVEL_METRICS = (LEVEL,)


def is_all_time_metric(metric: str) -> bool:
    return metric.startswith("flow:") or metric in ALL_TIME_METRICS


def is_level_metric(metric: str) -> bool:
    return metric.startswith("flow:") or metric in LEVEL_METRICS


class MetricSums:
    """A metric's total (in one currency, or all): the totals summed per metric and currency,
    and each metric's keys, in one pass, so each KPI is a lookup or a scan of its own metrics'
    keys rather than of every key."""

    def __init__(self, totals: Totals) -> None:
        self._sums: dict[str, dict[str, Decimal]] = {}
        self._keys: dict[str, list[tuple[TotalsKey, Decimal]]] = {}
        self._add(totals, shared=False)

    def plus(self, totals: Totals) -> MetricSums:
        """These sums with ``totals`` added, as a new index that shares every metric
        ``totals`` does not touch (neither index changes afterwards): its cost is the number
        of metrics and of ``totals``' keys, not of the keys indexed here."""
        out = MetricSums({})
        out._sums, out._keys = dict(self._sums), dict(self._keys)
        out._add(totals, shared=True)
        return out

    def _add(self, totals: Totals, *, shared: bool) -> None:
        copied: set[str] = set()
        for key, v in totals.items():
            m, c = key[0], key[3]
            if shared and m not in copied:  # copy before the first change: it is shared
                copied.add(m)
                self._sums[m] = dict(self._sums.get(m, {}))
                self._keys[m] = list(self._keys.get(m, ()))
            per = self._sums.get(m)
            if per is None:
                per = self._sums[m] = {}
                self._keys[m] = []
            per[c] = per.get(c, ZERO) + v
            self._keys[m].append((key, v))

    def entries(self, prefix: str) -> list[tuple[TotalsKey, Decimal]]:
        """Every key (and value) of the metrics named ``<prefix>…``."""
        return [e for m, keys in self._keys.items() if m.startswith(prefix) for e in keys]

    def __call__(self, metric: str, currency: str | None = None) -> Decimal:
        per = self._sums.get(metric, {})
        if currency is None:
            return sum(per.values(), ZERO)
        return per.get(currency, ZERO)

    def grouped(self, metric: str, by: str, currency: str | None = None) -> dict[str, Decimal]:
        """Sums of ``metric`` by ``source`` or ``channel``."""
        index = 1 if by == "source" else 2
        out: dict[str, Decimal] = {}
        for key, v in self._keys.get(metric, ()):
            if currency is None or key[3] == currency:
                out[key[index]] = out.get(key[index], ZERO) + v
        return out

    def prefixed(self, prefix: str, currency: str | None = None) -> dict[str, Decimal]:
        """Sums of every ``<prefix><name>`` metric, by ``name``."""
        out: dict[str, Decimal] = {}
        for metric, per in self._sums.items():
            if metric.startswith(prefix):
                name = metric[len(prefix) :]
                value = sum(per.values(), ZERO) if currency is None else per.get(currency)
                if value is not None:
                    out[name] = out.get(name, ZERO) + value
        return out


def prefixed(totals: Totals, prefix: str, currency: str | None = None) -> dict[str, Decimal]:
    """Sums of every ``<prefix><name>`` metric, by ``name`` (one scan of the keys)."""
    out: dict[str, Decimal] = {}
    for (m, _, _, c), v in totals.items():
        if m.startswith(prefix) and (currency is None or c == currency):
            name = m[len(prefix) :]
            out[name] = out.get(name, ZERO) + v
    return out


def added(parts: Sequence[Totals]) -> dict[TotalsKey, Decimal]:
    """The parts summed key by key, into a new dict (a copy of the largest, plus the rest)."""
    if not parts:
        return {}
    largest = max(range(len(parts)), key=lambda i: len(parts[i]))
    out: dict[TotalsKey, Decimal] = dict(parts[largest])
    for i, part in enumerate(parts):
        if i != largest:
            for key, value in part.items():
                out[key] = out.get(key, ZERO) + value
    return out
