"""Group keys: canonical text, per-group seeds and deterministic artifact paths.

Seeds and paths depend only on the configured seed and the key's values, never on which
executor or partition handled the group, so reruns and retries reproduce the same models
at the same places.
"""
from __future__ import annotations

import datetime
import hashlib
import math
import string
from decimal import Decimal

import numpy as np
import pandas as pd


def _canonical(value: object) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):  # one text whether Arrow gave bytes or bytearray
        return "0x" + bytes(value).hex()
    if isinstance(value, Decimal):  # 1.50 (a decimal(p,2) key) and 1.5 (the same key as a double) are one group
        value = value.normalize()
        return str(int(value)) if value == value.to_integral_value() else format(value, "f")
    if isinstance(value, (datetime.date, np.datetime64)):
        return _canonical_time(pd.Timestamp(value) if not isinstance(value, datetime.date) else value)
    if isinstance(value, (np.integer,)):
        value = int(value)
    elif isinstance(value, (np.floating,)):
        value = float(value)
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        # 3 and 3.0 name the same group whether the column arrived as long or double.
        value = int(value)
    return str(value)


def _canonical_time(value: datetime.date) -> str:
    """A date, or a timestamp at midnight, as ``2024-05-01``; other timestamps as ``2024-05-01 12:30:00[.ffffff]``:
    the same text whether the key arrives as a date, a ``datetime`` or a pandas ``Timestamp`` (MLflow hands a
    router date columns as timestamps)."""
    if not isinstance(value, datetime.datetime):
        return value.isoformat()
    if value.tzinfo is not None:
        value = value.replace(tzinfo=None)
    if (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0) and \
            getattr(value, "nanosecond", 0) == 0:
        return value.date().isoformat()
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


PATH_PART_CHARS = 96  # of one encoded name or value: file names stay far below 255 bytes on every filesystem
PATH_SAFE = frozenset(string.ascii_letters + string.digits + "._-")


def _encode(text: str) -> str:
    """ASCII letters, digits and ``._-`` as they are; every other character as ``~`` and the hex of each of its
    UTF-8 bytes. Not ``%``: MLflow decodes percent escapes when it downloads artifacts, and then finds no file."""
    return "".join(ch if ch in PATH_SAFE else "".join(f"~{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
                   for ch in text)


def _path_part(text: str, *, case_tag: bool = False) -> str:
    """``text`` encoded (``_encode``; a trailing dot too: Windows drops it), shortened when long to a readable head
    plus ``~~`` and a SHA-256 of the whole text; with ``case_tag``, text with upper-case letters also gets the
    hash, so that keys differing only in case never share a file on a case-insensitive filesystem."""
    encoded = _encode(text)
    if encoded.endswith("."):
        encoded = encoded[:-1] + "~2E"
    long = len(encoded) > PATH_PART_CHARS
    if not long and not (case_tag and text != text.lower()):
        return encoded
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    head = encoded[:PATH_PART_CHARS - 18] if long else encoded
    head = head[:head.rfind("~")] if "~" in head[-2:] else head  # never half an escape
    return f"{head}~~{digest}"


def key_path(key_cols: tuple[str, ...], key: object) -> str:
    """Deterministic relative artifact path of a group, e.g. ``store=3/item=17``.

    Names and values are encoded (``_encode``), so any key maps to a safe path; a long one is shortened to a
    head and a hash of its full text (``_path_part``; the full key stays in the run's group_metrics table), and a
    value with upper-case letters carries that hash too, so two keys never share a path on any filesystem.
    """
    parts = [f"{_path_part(str(c))}={_path_part(_canonical(v), case_tag=True)}"
             for c, v in zip(key_cols, key_tuple(key))]
    return "/".join(parts)


def canonical_key(key: object) -> tuple[str, ...]:
    """Key as a tuple of canonical strings: the lookup key of the router model."""
    return tuple(_canonical(v) for v in key_tuple(key))
