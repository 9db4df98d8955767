"""Reading events back with their personal fields: what the read API and the subject-access
export show. A part whose key is gone reads as erased, never as an error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from clm_infra.privacy.ciphers import DataKey, MasterKeys, Undecryptable
from clm_infra.privacy.sealing import Personal, open_event, sealed_subject
from clm_infra.privacy.store import read_keys


async def open_events(
    conn: AsyncConnection, masters: MasterKeys, docs: Sequence[dict[str, Any]]
) -> list[tuple[dict[str, Any], Personal]]:
    """Each stored event document with its personal fields put back (one read of the keys)."""
    wanted = {s for s in map(sealed_subject, docs) if s is not None}
    keys: dict[str, DataKey] = {}
    for subject, stored in (await read_keys(conn, wanted)).items():
        try:
            keys[subject] = masters.unwrap(subject, stored.key_id, stored.master_id, stored.wrapped)
        except Undecryptable:
            continue  # a master key not configured here: its parts read as erased
    return [open_event(doc, keys) for doc in docs]
