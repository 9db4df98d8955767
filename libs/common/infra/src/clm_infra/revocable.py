"""Credentials that are revoked, never deleted (API keys, webhook secrets): a table with an
``id`` and a ``revoked_at``, listed in id order and revoked by id."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")


async def list_rows(conn: AsyncConnection, table: Table, row: type[R]) -> list[R]:
    """Every row of ``table``, revoked ones included, in id order, as ``row`` (a dataclass
    whose fields name the columns)."""
    columns = [table.c[f.name] for f in fields(row)]
    result = await conn.execute(select(*columns).order_by(table.c.id))
    return [row(*values) for values in result]


async def revoke_row(conn: AsyncConnection, table: Table, row_id: int) -> bool:
    """Whether a live row of that id was there (and is now revoked)."""
    result = await conn.execute(
        update(table)
        .where(table.c.id == row_id, table.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    return bool(result.rowcount)
