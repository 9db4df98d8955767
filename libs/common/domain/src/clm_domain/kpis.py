"""Windows and money, pure: the shared vocabulary of the KPI math (``clm_metrics.formulas``).

A window is a span ending now in whole minutes; money is a decimal string to the cent; a ratio
whose denominator is 0 is unknown (``None``), never 0.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from clm_domain.bounds import SUM_CONTEXT

WINDOWS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
_WINDOW = re.compile(r"^(\d{1,4})([mhd])$")
MAX_WINDOW = timedelta(days=731)
CENT = Decimal("0.01")


def parse_window(text: str) -> timedelta:
    """``90m``, ``24h``, ``7d`` … up to two years; ValueError otherwise."""
    if text in WINDOWS:
        return WINDOWS[text]
    match = _WINDOW.match(text)
    if not match:
        raise ValueError("window must look like 60m, 24h or 7d")
    amount, unit = int(match.group(1)), match.group(2)
    span = {
        "m": timedelta(minutes=amount),
        "h": timedelta(hours=amount),
        "d": timedelta(days=amount),
    }[unit]
    if span <= timedelta(0) or span > MAX_WINDOW:
        raise ValueError("window must be between 1m and 731d")
    return span


def floor_minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def ratio(numerator: Decimal, denominator: Decimal) -> Decimal | None:
    if denominator == 0:
        return None
    return numerator / denominator


def money(value: Decimal | None) -> str | None:
    """Money as a decimal string to the cent (banker's rounding), or None."""
    if value is None:
        return None
    return str(value.quantize(CENT, rounding=ROUND_HALF_EVEN, context=SUM_CONTEXT))


def exact_money(value: Decimal) -> str:
    """An exact amount as text with at least two decimals (``59.9000`` → ``59.90``)."""
    normalized = value.normalize(SUM_CONTEXT)  # the default context would round past 28 digits
    if normalized.as_tuple().exponent > -2:  # type: ignore[operator]
        normalized = value.quantize(CENT, context=SUM_CONTEXT)
    return format(normalized, "f")


def window_bounds(now: datetime, span: timedelta) -> tuple[datetime, datetime]:
    """[start, end) of a rolling window ending now, in whole minutes (the bucket size).

    The minute in progress is included, so the window covers ``span`` plus up to a minute.
    """
    end = floor_minute(now) + timedelta(minutes=1)
    return floor_minute(now - span), end
