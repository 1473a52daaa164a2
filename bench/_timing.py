"""Shared by the bench scripts (run as ``python bench/<script>.py``, so this folder is on sys.path)."""
from __future__ import annotations

import time


def timed(fn, repeat: int = 1):
    """``(best wall seconds of repeat runs, the last result)``: the first run of a plan also pays warm-up."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out
