"""HyperLogLog distinct counts (pure): mergeable per-bucket sketches for unique visitors etc.

Precision 14: 16384 one-byte registers, a standard error of 1.04 / √16384 ≈ 0.81 %. Ids are
hashed with BLAKE2b (64 bits). The estimate is Ertl's improved raw estimator ("New cardinality
estimation algorithms for HyperLogLog sketches", 2017), unbiased from 0 to 2⁶⁴ without
empirical bias tables; small counts come out exact in practice (it tends to linear counting).
Registers are stored zlib-compressed: a sparse minute bucket takes a few hundred bytes.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Hashable, Iterable

import numpy as np
import numpy.typing as npt

P = 14
M = 1 << P
Q = 64 - P
_ALPHA_INF = 1 / (2 * math.log(2))

Registers = npt.NDArray[np.uint8]


def empty() -> Registers:
    return np.zeros(M, dtype=np.uint8)


def _position(item: str) -> tuple[int, int]:
    h = int.from_bytes(hashlib.blake2b(item.encode(), digest_size=8).digest(), "big")
    index = h >> Q
    rest = h & ((1 << Q) - 1)
    rank = Q - rest.bit_length() + 1
    return index, rank


def add(registers: Registers, items: Iterable[str]) -> Registers:
    raise_to(registers, items)
    return registers


def raise_to(registers: Registers, items: Iterable[str]) -> bool:
    """Add the items (in place); True when a register rose. False: the sketch is unchanged
    (every item, or one as rare, was seen before), so there is nothing new to store."""
    return raise_at(registers, map(_position, items))


Position = tuple[int, int]


def positions(items: Iterable[str]) -> dict[str, Position]:
    """Each item's register and rank: hashed once, for adding it to many sketches."""
    return {item: _position(item) for item in items}


def raise_at(registers: Registers, at: Iterable[Position]) -> bool:
    """:func:`raise_to` with the items' positions already known."""
    rose = False
    for index, rank in at:
        if registers[index] < rank:
            registers[index] = rank
            rose = True
    return rose


def merge(sketches: Iterable[Registers]) -> Registers:
    out = empty()
    for s in sketches:
        merge_into(out, s)
    return out


def merge_into(target: Registers, other: Registers) -> Registers:
    """``target`` becomes the union of both sketches (in place)."""
    np.maximum(target, other, out=target)
    return target


def _sigma(x: float) -> float:
    if x == 1:
        return math.inf
    y, z = 1.0, x
    while True:
        x = x * x
        z_old = z
        z += x * y
        y += y
        if z == z_old:
            return z


def _tau(x: float) -> float:
    if x in (0, 1):
        return 0.0
    y, z = 1.0, 1 - x
    while True:
        x = math.sqrt(x)
        z_old = z
        y *= 0.5
        z -= (1 - x) ** 2 * y
        if z == z_old:
            return z / 3


def estimate(registers: Registers) -> int:
    """The estimated number of distinct items added."""
    counts = np.bincount(registers, minlength=Q + 2)
    if counts[0] == M:
        return 0
    z = M * _tau(1 - counts[Q + 1] / M)
    for k in range(Q, 0, -1):
        z = 0.5 * (z + float(counts[k]))
    z += M * _sigma(counts[0] / M)
    return round(_ALPHA_INF * M * M / z)


def dumps(registers: Registers) -> bytes:
    return zlib.compress(registers.tobytes(), 1)


def loads(blob: bytes) -> Registers:
    return np.frombuffer(zlib.decompress(blob), dtype=np.uint8).copy()


class LastWritten:
    """The registers of the blobs this process wrote last, by row: a row read back with those
    very bytes (nobody wrote it since) is not decompressed again. A filled hour's or day's
    sketch takes tens of microseconds to inflate, and one consumer rewrites the same few rows
    batch after batch. At most ``max_rows`` rows, the least recently written dropped first."""

    def __init__(self, max_rows: int = 256) -> None:
        self._max = max_rows
        self._rows: dict[Hashable, tuple[bytes, Registers]] = {}

    def loads(self, row: Hashable, blob: bytes) -> Registers:
        """:func:`loads` of ``blob``, a copy of the registers kept when it is the one written."""
        kept = self._rows.get(row)
        if kept is not None and kept[0] == blob:
            return kept[1].copy()
        return loads(blob)

    def wrote(self, row: Hashable, blob: bytes, registers: Registers) -> None:
        """``blob`` (``dumps(registers)``) was written to ``row``; ``registers`` is kept as is
        (the caller no longer changes it)."""
        self._rows.pop(row, None)
        if self._max <= 0:
            return
        if len(self._rows) >= self._max:
            del self._rows[next(iter(self._rows))]
        self._rows[row] = (blob, registers)
