"""The packed pass both training and per-group search make over a partition: groups arrive contiguous (sorted by
key) in Arrow batches, and a group may span batches. ``complete_groups`` turns the batches into frames of whole
groups (the carry-over loop, written once); ``group_bounds`` finds each group's row range in a frame."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd


def group_bounds(pdf: pd.DataFrame, key_cols: tuple[str, ...]) -> list[tuple[tuple, int, int]]:
    """``(key, start, stop)`` of each run of equal keys in ``pdf`` (groups must be contiguous)."""
    n = len(pdf)
    if n == 0:
        return []
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for col in key_cols:
        values = pdf[col].to_numpy()
        differs = values[1:] != values[:-1]
        if values.dtype.kind in "fc":  # NaN keys are one group in Spark: NaN next to NaN is no change
            differs &= ~(np.isnan(values[1:]) & np.isnan(values[:-1]))
        change[1:] |= differs
    starts = np.flatnonzero(change)
    stops = np.append(starts[1:], n)
    cols = [_key_values(pdf[c]) for c in key_cols]
    return [(tuple(c[s].item() if hasattr(c[s], "item") else c[s] for c in cols), int(s), int(e))
            for s, e in zip(starts, stops)]


def _key_values(column: pd.Series) -> np.ndarray:
    """A key column as an array whose items are the key values: timestamps as ``pd.Timestamp`` objects, since
    numpy's ``.item()`` turns a nanosecond datetime64 into an integer that Arrow then reads as microseconds."""
    if column.dtype.kind in "mM":
        return column.astype(object).to_numpy()
    return column.to_numpy()



def complete_groups(batches: Iterator[pd.DataFrame], key_cols: tuple[str, ...]) -> Iterator[pd.DataFrame]:
    """Frames of whole groups from sorted ``batches``: the last group of a batch is carried over to the next,
    since it may continue there; the final carry is yielded at the end."""
    carry: pd.DataFrame | None = None
    for batch in batches:
        if carry is not None and len(carry):
            batch = pd.concat([carry, batch], ignore_index=True)
        bounds = group_bounds(batch, key_cols)
        if not bounds:
            continue
        last_start = bounds[-1][1]
        carry = batch.iloc[last_start:]
        if last_start:
            yield batch.iloc[:last_start]
    if carry is not None and len(carry):
        yield carry
