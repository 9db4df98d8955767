"""The data keys' table, on the shared :data:`metadata` (``docs/security.md``)."""

from __future__ import annotations

from sqlalchemy import Column, LargeBinary, Table, Text, func

from clm_infra.schema import TS, metadata

# One row a subject (a customer id, or an anonymous id): its data key, wrapped under the
# master key ``master_id``. Erasure deletes the row: every sealed copy of the subject's
# personal fields is then unreadable. A subject erased and back gets a new key (a new
# ``key_id``): the parts sealed under the old one stay unreadable.
data_keys = Table(
    "data_keys",
    metadata,
    Column("subject", Text, primary_key=True),
    Column("key_id", Text, nullable=False),
    Column("master_id", Text, nullable=False),
    Column("wrapped", LargeBinary, nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Column("rewrapped_at", TS),
)
