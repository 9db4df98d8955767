"""The outbox's row format: all the lifecycle records of one write, as one row.

Every writer (the batch, the sweeper, the erasure and merge endpoints) queues its records with
:func:`clm_stage_engine.repository.outbox.insert_outbox`, in its own transaction: ONE
``outbox_batches`` row holding the topic, the number of records and a blob of the records in
publish order. A batch of thousands of events costs Postgres one row (and its TOAST chunks,
compressed with lz4) instead of a row per record to insert, read back and delete.

The blob: ``2n`` big-endian unsigned 32-bit lengths (record ``i``'s key length, then its value
length), then the records' keys and values, each key followed by its value::

    | klen0 | vlen0 | klen1 | vlen1 | … | key0 | value0 | key1 | value1 | …

Engines before migration 0009 wrote one ``outbox`` row per record (key, payload); the relay
still drains that table, in the same id order (the two tables share a sequence).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence


def pack_records(records: Sequence[tuple[str, bytes]]) -> bytes:
    """The blob of ``records`` ((key, value) pairs, in publish order)."""
    keys = [key.encode() for key, _ in records]
    lengths: list[int] = []
    body: list[bytes] = []
    for key, (_, value) in zip(keys, records, strict=True):
        lengths += (len(key), len(value))
        body += (key, value)
    return struct.pack(f">{len(lengths)}I", *lengths) + b"".join(body)


def unpack_records(blob: bytes, count: int) -> Iterator[tuple[bytes, bytes]]:
    """The ``count`` (key, value) pairs of a blob, in order; ValueError if it holds other."""
    header = 8 * count
    if count < 1 or len(blob) < header:
        raise ValueError(f"an outbox blob of {len(blob)} bytes cannot hold {count} records")
    lengths = struct.unpack_from(f">{2 * count}I", blob)
    if header + sum(lengths) != len(blob):
        raise ValueError(f"an outbox blob of {len(blob)} bytes does not hold {count} records")
    at = header
    for i in range(0, 2 * count, 2):
        key_end = at + lengths[i]
        end = key_end + lengths[i + 1]
        yield blob[at:key_end], blob[key_end:end]
        at = end
