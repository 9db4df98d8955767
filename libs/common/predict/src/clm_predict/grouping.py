"""Distinct rows of a few float columns: many customers share the same (x, t_x, T) when
times are whole days, so the likelihood and the scores are computed once per distinct row."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]


def distinct_rows(*columns: FloatArray) -> tuple[list[FloatArray], IndexArray, FloatArray]:
    """(the distinct rows' columns, each input row's index into them, each one's count)."""
    order = np.lexsort(columns[::-1])
    ordered = [c[order] for c in columns]
    new = np.ones(len(order), dtype=bool)
    if len(order):
        new[1:] = np.any([c[1:] != c[:-1] for c in ordered], axis=0)
    group = np.cumsum(new) - 1
    inverse = np.empty(len(order), dtype=np.intp)
    inverse[order] = group
    counts = np.bincount(group).astype(np.float64) if len(order) else np.zeros(0)
    return [c[new] for c in ordered], inverse, counts
