"""What ``clm keys`` and ``clm webhooks`` share: listing what is stored, revoking one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from clm_cli.errors import CliError


def print_stored(rows: Iterable[Any], kind: str) -> None:
    """One tab-separated line a row: id, its ``kind`` column, source, active or revoked, label
    (never the secret)."""
    for row in rows:
        state = "revoked" if row.revoked_at else "active"
        print(f"{row.id}\t{getattr(row, kind)}\t{row.source}\t{state}\t{row.label}")


def report_revoked(revoked: bool, what: str, ident: int) -> int:
    """Say ``what`` ``ident`` is revoked, or fail when no active one had that id."""
    if not revoked:
        raise CliError(f"no active {what} with id {ident}")
    print(f"revoked {what} {ident}")
    return 0
