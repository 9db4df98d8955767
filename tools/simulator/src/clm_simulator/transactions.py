"""Real transactions from a CSV file, as purchase events (``clm simulate --csv``).

The file has a header row naming its columns (any order, case and spaces ignored):
``customer_id`` (or ``customer``), ``date`` (or ``timestamp``, ``occurred_at``), ``amount``
(or ``total``, ``revenue``), optionally ``currency`` and ``order_id``. A date is ISO 8601
(``2024-03-31``, ``2024-03-31 14:05``, ``2024-03-31T14:05:00+02:00``; without an offset: UTC).
Amounts are decimals with a dot (``59.90``), ≥ 0. A bad row is named by line and column.

Time can be moved: :func:`shift_to` moves every date by one offset so that the last one is a
given instant; :func:`compress` maps the file's span onto a span ``factor`` times shorter
starting at a given instant (a replay "as if live, N times faster").
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

from clm_domain.currencies import ISO_4217

COLUMNS: dict[str, tuple[str, ...]] = {
    "customer_id": ("customer_id", "customerid", "customer"),
    "date": ("date", "timestamp", "occurred_at", "datetime", "time"),
    "amount": ("amount", "total", "revenue", "value"),
    "currency": ("currency",),
    "order_id": ("order_id", "orderid", "order"),
}
REQUIRED = ("customer_id", "date", "amount")
MAX_REPORTED = 10
T = TypeVar("T")


class CsvError(ValueError):
    """The file cannot be used; the message names each bad line and column."""


@dataclass(frozen=True, slots=True)
class Transaction:
    line: int
    customer_id: str
    at: datetime
    amount: Decimal
    currency: str
    order_id: str | None


def _key(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _columns(header: list[str], where: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for index, name in enumerate(header):
        for column, aliases in COLUMNS.items():
            if _key(name) in aliases and column not in found:
                found[column] = index
    missing = [c for c in REQUIRED if c not in found]
    if missing:
        raise CsvError(
            f"{where}:1: the header must name the columns {', '.join(REQUIRED)} "
            f"(missing: {', '.join(missing)}; found: {', '.join(header) or 'nothing'})"
        )
    return found


def parse_date(text: str) -> datetime:
    value = text.strip()
    if not value:
        raise ValueError("is empty")
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{value!r} is not an ISO 8601 date (2024-03-31[T14:05[:00][+02:00]])"
        ) from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def parse_amount(text: str) -> Decimal:
    value = text.strip()
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal amount (like 59.90)") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{value!r} is not an amount ≥ 0")
    if amount.as_tuple().exponent < -4:  # type: ignore[operator]
        raise ValueError(f"{value!r} has more than 4 decimals")
    return amount


def parse_transactions(text: str, *, where: str, currency: str = "USD") -> list[Transaction]:
    """Every row as a transaction, or CsvError naming the bad lines and columns."""
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, None)
    if header is None:
        raise CsvError(f"{where}: the file is empty (a header row and transactions expected)")
    cols = _columns(header, where)
    out: list[Transaction] = []
    errors: list[str] = []
    for row in rows:
        line = rows.line_num
        if any(cell.strip() for cell in row):
            parsed, problems = _row(row, cols, f"{where}:{line}", currency)
            errors.extend(problems)
            if parsed is not None:
                out.append(replace(parsed, line=line))
    if errors:
        more = f" (and {len(errors) - MAX_REPORTED} more)" if len(errors) > MAX_REPORTED else ""
        raise CsvError(
            f"{len(errors)} bad value(s) in {where}{more}:\n  " + "\n  ".join(errors[:MAX_REPORTED])
        )
    if not out:
        raise CsvError(f"{where}: no transactions after the header")
    return out


def _row(
    row: list[str], cols: dict[str, int], where: str, currency: str
) -> tuple[Transaction | None, list[str]]:
    """One data row as a transaction (line 0: the caller sets it) or its problems."""
    problems: list[str] = []

    def cell(column: str) -> str:
        index = cols.get(column)
        return row[index] if index is not None and index < len(row) else ""

    def check(column: str, parse: Callable[[str], T]) -> T | None:
        try:
            return parse(cell(column))
        except ValueError as exc:
            problems.append(f"{where}: column {cols[column] + 1} ({column}): {exc}")
            return None

    customer = check("customer_id", _nonempty)
    at = check("date", parse_date)
    amount = check("amount", parse_amount)
    code: str | None = currency
    if "currency" in cols:
        code = check("currency", lambda v: _currency(v, currency))
    if customer is None or at is None or amount is None or code is None:
        return None, problems
    return Transaction(0, customer, at, amount, code, cell("order_id").strip() or None), problems


def _nonempty(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("is empty")
    if len(value) > 200:
        raise ValueError("is longer than 200 characters")
    return value


def _currency(value: str, default: str) -> str:
    code = value.strip().upper() or default
    if code not in ISO_4217:
        raise ValueError(f"{value!r} is not an ISO 4217 currency code")
    return code


def load_transactions(path: Path, *, currency: str = "USD") -> list[Transaction]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CsvError(f"{path}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise CsvError(f"{path}: not UTF-8 text ({exc.reason})") from None
    return parse_transactions(text, where=str(path), currency=currency)


def shift_to(rows: list[Transaction], end: datetime) -> list[Transaction]:
    """Every date moved by one offset so that the last one is ``end``."""
    offset = end - max(r.at for r in rows)
    return [replace(r, at=r.at + offset) for r in rows]


def compress(rows: list[Transaction], start: datetime, factor: float) -> list[Transaction]:
    """The file's span mapped onto one ``factor`` times shorter, beginning at ``start``."""
    first = min(r.at for r in rows)
    return [replace(r, at=start + (r.at - first) / factor) for r in rows]


def purchase_events(
    rows: list[Transaction], *, prefix: str, source: str, channel: str | None = None
) -> list[dict[str, Any]]:
    """The transactions as purchase event documents, in time order (stable ids per line)."""
    docs = []
    for r in sorted(rows, key=lambda r: (r.at, r.line)):
        doc: dict[str, Any] = {
            "event_id": f"{prefix}-l{r.line}",
            "type": "purchase",
            "customer_id": r.customer_id,
            "occurred_at": r.at.isoformat().replace("+00:00", "Z"),
            "source": source,
            "properties": {
                "order_id": r.order_id or f"{prefix}-l{r.line}",
                "amount": format(r.amount, "f"),
                "currency": r.currency,
            },
        }
        if channel is not None:
            doc["channel"] = channel
        docs.append(doc)
    return docs
