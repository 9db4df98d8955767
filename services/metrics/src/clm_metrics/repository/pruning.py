"""The retention policy's deletes: minute rows, then hour rows, past their age."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from clm_infra.schema import kpi_buckets, kpi_distinct, kpi_rollups


async def prune(conn: AsyncConnection, *, minutes_before: datetime, hours_before: datetime) -> int:
    """Drop minute buckets and distinct sets older than their retention (hours and days
    stay)."""
    n = 0
    for stmt in (
        kpi_buckets.delete().where(kpi_buckets.c.bucket_start < minutes_before),
        kpi_distinct.delete().where(
            kpi_distinct.c.grain == "minute", kpi_distinct.c.bucket_start < minutes_before
        ),
        kpi_rollups.delete().where(
            kpi_rollups.c.grain == "hour", kpi_rollups.c.bucket_start < hours_before
        ),
        kpi_distinct.delete().where(
            kpi_distinct.c.grain == "hour", kpi_distinct.c.bucket_start < hours_before
        ),
    ):
        n += (await conn.execute(stmt)).rowcount
    return n
