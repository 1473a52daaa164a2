"""Shared by the bench scripts (run as ``python bench/<script>.py``, so this folder is on sys.path)."""
from __future__ import annotations

import time


def timed(fn, repeat: int = 1):
    """``(best wall seconds of repeat runs, the last result)``: the first run of a plan also pays warm-up.

    Every run's seconds are kept in ``timed.runs`` until the next call (for medians and spreads)."""
    out, timed.runs = None, []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        timed.runs.append(time.perf_counter() - start)
    return min(timed.runs, default=float("inf")), out


timed.runs = []
