"""Stored offsets as the truth: a consumer that lost its partition cannot commit a late batch."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain.lifecycle import Stage, Transition
from clm_infra.db import create_engine
from clm_infra.offsets import OffsetAdvance, OffsetFenced, advance_offsets, load_offsets
from clm_infra.schema import stage_transitions
from clm_stage_engine.repository import insert_transitions
from tests.factories import NOW


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


def move(n: int) -> Transition:
    return Transition(f"c{n}", None, Stage.REACH, NOW, f"e{n}", "test")


async def test_a_zombie_batch_is_fenced_and_its_effects_roll_back(db: AsyncEngine) -> None:
    async with db.begin() as conn:  # the first owner applies offsets 0..9
        await advance_offsets(conn, "g", [OffsetAdvance("t", 0, None, 10)])
        await insert_transitions(conn, [move(1)])
    async with db.begin() as conn:  # the new owner continues from what is stored
        stored = await load_offsets(conn, "g", [("t", 0)])
        await advance_offsets(conn, "g", [OffsetAdvance("t", 0, stored[("t", 0)], 20)])
        await insert_transitions(conn, [move(2)])

    async def zombie() -> None:  # the old owner wakes up with its stale view
        async with db.begin() as conn:
            await insert_transitions(conn, [move(3)])
            await advance_offsets(conn, "g", [OffsetAdvance("t", 0, 10, 15)])

    with pytest.raises(OffsetFenced):
        await zombie()
    with pytest.raises(OffsetFenced):  # nor can a second "first" writer claim the partition
        async with db.begin() as conn:
            await advance_offsets(conn, "g", [OffsetAdvance("t", 0, None, 5)])
    async with db.connect() as conn:
        assert await load_offsets(conn, "g", [("t", 0)]) == {("t", 0): 20}
        ids = (await conn.execute(select(func.count()).select_from(stage_transitions))).scalar_one()
    assert ids == 2
