"""scikit-learn's per-call "is this a dataframe?" tests, answered at once for plain numpy arrays.

scikit-learn 1.9 asks narwhals, at every ``fit``/``predict``, whether each input is a dataframe or
a series of some library: ``validation._nw_into_df_or_series`` (from ``check_array`` and
``_num_samples``) and ``validation._get_feature_names`` (from the feature-name checks). narwhals
answers through ``inspect.getattr_static`` over every dataframe library already imported (pyspark
is one, in a Spark worker) and every installed plugin. For a ``numpy.ndarray`` the answer is always
"no" (no feature names), yet a small model's ``fit`` + ``predict`` pay it seven times. Measured
2026-11-21, ``fit_packed`` on 2,500 groups x 200 rows of LinearRegression, alternating in one process:
513-548 us per group with scikit-learn's tests, 362-390 us with the first answered here, 306-317 us
with both; model bytes identical.

``numpy_fast_path()`` swaps in versions that give that answer for exact ``numpy.ndarray`` inputs and
call scikit-learn's own function for everything else (DataFrames, Series, lists, array subclasses),
so the checks and their outcome are unchanged. It is scoped (restored when the last user leaves),
and each swap is skipped when this scikit-learn has no such function or when its function does not
give that answer for an array (a future version that treats arrays otherwise keeps its behaviour).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np

# scikit-learn function in sklearn.utils.validation -> what it returns for any numpy.ndarray
ANSWERS: dict[str, object] = {"_nw_into_df_or_series": False, "_get_feature_names": None}

_lock = threading.Lock()
_depth = 0
_originals: dict[str, Callable] = {}
_usable: tuple[str, ...] | None = None


def _validation_module():
    from sklearn.utils import validation

    return validation


def _fast(original: Callable, answer: object) -> Callable:
    def for_numpy(x, *args, _ndarray=np.ndarray, _original=original, _answer=answer, **kwargs):
        return _answer if type(x) is _ndarray else _original(x, *args, **kwargs)

    for_numpy.original = original
    return for_numpy


def available() -> tuple[str, ...]:
    """The functions of ``ANSWERS`` that this scikit-learn has and that give that answer (checked once)."""
    global _usable
    if _usable is None:
        module, usable = _validation_module(), []
        for name, answer in ANSWERS.items():
            function = getattr(module, name, None)
            function = getattr(function, "original", function)
            try:
                if callable(function) and function(np.zeros((2, 2))) is answer:
                    usable.append(name)
            except Exception:  # noqa: BLE001 - anything unexpected: leave that function alone
                pass
        _usable = tuple(usable)
    return _usable


@contextmanager
def numpy_fast_path() -> Iterator[tuple[str, ...]]:
    """While active, scikit-learn's dataframe tests answer at once for ``numpy.ndarray`` inputs.

    Yields the names of the functions swapped (empty: none). Nested and concurrent uses share one swap.
    """
    global _depth
    names = available()
    if not names:
        yield names
        return
    module = _validation_module()
    with _lock:
        if _depth == 0:
            for name in names:
                _originals[name] = getattr(module, name)
                setattr(module, name, _fast(_originals[name], ANSWERS[name]))
        _depth += 1
    try:
        yield names
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for name in names:
                    setattr(module, name, _originals.pop(name))
