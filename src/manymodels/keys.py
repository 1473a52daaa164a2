"""Group keys: canonical text, per-group seeds and deterministic artifact paths.

Seeds and paths depend only on the configured seed and the key's values, never on which
executor or partition handled the group, so reruns and retries reproduce the same models
at the same places.
"""
from __future__ import annotations

import hashlib
import math
from urllib.parse import quote

import numpy as np


def _canonical(value: object) -> str:
    if isinstance(value, (np.integer,)):
        value = int(value)
    elif isinstance(value, (np.floating,)):
        value = float(value)
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        # 3 and 3.0 name the same group whether the column arrived as long or double.
        value = int(value)
    return str(value)


def key_tuple(key: object) -> tuple:
    return key if isinstance(key, tuple) else (key,)


def key_text(key_cols: tuple[str, ...], key: object) -> str:
    """Human-readable key for messages, e.g. ``store=3, item=17``."""
    return ", ".join(f"{c}={_canonical(v)}" for c, v in zip(key_cols, key_tuple(key)))


def group_seed(seed: int, key: object) -> int:
    """A 31-bit seed derived from the configured seed and the group key."""
    text = f"{int(seed)}|" + "|".join(_canonical(v) for v in key_tuple(key))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def key_path(key_cols: tuple[str, ...], key: object) -> str:
    """Deterministic relative artifact path of a group, e.g. ``store=3/item=17``.

    Values are percent-encoded so any string key maps to a safe, unique path.
    """
    parts = [f"{quote(c, safe='')}={quote(_canonical(v), safe='')}" for c, v in zip(key_cols, key_tuple(key))]
    return "/".join(parts)


def canonical_key(key: object) -> tuple[str, ...]:
    """Key as a tuple of canonical strings: the lookup key of the router model."""
    return tuple(_canonical(v) for v in key_tuple(key))
