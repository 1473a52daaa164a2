"""The per-process cache of loaded models, keyed by (SHA-256, format): each scoring worker deserializes a model
once, and a hit is checked against the load policy of the version that asks. Bounded in bytes
(``MANYMODELS_MODEL_CACHE_MB`` or the scoring call's ``model_cache_mb``), least recently used first out."""
from __future__ import annotations

import math
import os
import threading
import warnings
from collections import OrderedDict, deque
from itertools import islice

from manymodels.core.model_bytes import MODEL_FORMAT, LoadPolicy, check_policy, loads, warn_on_version_mismatch
from manymodels.errors import InputError
from manymodels.settings import CACHE_ENV

DEFAULT_CACHE_MB = 1024


def cache_bytes(megabytes=None) -> int:
    """The cache bound in bytes: ``megabytes``, else ``$MANYMODELS_MODEL_CACHE_MB``, else 1024 MB. A value that
    is not a positive number raises ``InputError`` naming where it came from."""
    source, value = ("model_cache_mb", megabytes) if megabytes is not None else \
        (CACHE_ENV, os.environ.get(CACHE_ENV, DEFAULT_CACHE_MB))
    try:
        mb = float(value)
    except (TypeError, ValueError):
        mb = float("nan")
    if not (mb > 0 and math.isfinite(mb)):
        raise InputError(f"{source}={value!r}: expected a positive number of megabytes for the per-worker model "
                         f"cache (default {DEFAULT_CACHE_MB}). Fix: e.g. {source}=2048.")
    return int(mb * 2**20)


def _bound_from_environment() -> int:
    """``cache_bytes()`` for a cache made at import: a bad variable warns and falls back to the default instead
    of breaking every import (the driver's scoring calls raise it)."""
    try:
        return cache_bytes()
    except InputError as exc:
        warnings.warn(f"{exc} Using {DEFAULT_CACHE_MB} MB.", RuntimeWarning, stacklevel=2)
        return cache_bytes(DEFAULT_CACHE_MB)


# SHA-256s of the latest loads kept for load logs and tests (``loaded``): about 8 MB at most, instead of one
# string per load for the life of a worker. A load log is written after every batch, and a batch loads at most
# one model per group it holds.
LOAD_HISTORY = 65_536


class ModelCache:
    """Loaded models keyed by (SHA-256, format); each blob is deserialized at most once per process while it stays
    cached.

    Python workers live as long as their executor and serve every job of it, so a cache that only grows
    would keep every model of every nightly run. The cache is bounded by the serialized bytes of the models
    it holds (``max_bytes``, see ``cache_bytes``): past the bound the least recently used models are dropped,
    and one needed again is loaded (and checked) again. The model just loaded always stays, even when it
    alone is larger than the bound.
    """

    def __init__(self, max_bytes: int | None = None, history: int = LOAD_HISTORY) -> None:
        self._models: OrderedDict[tuple[str, str], tuple[object, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_bytes = _bound_from_environment() if max_bytes is None else max_bytes
        self.bytes = 0  # serialized bytes of the models held
        self.evictions = 0
        self.loads = 0  # how many blobs were actually deserialized (tests count this)
        self.loaded: deque[str] = deque(maxlen=history)  # the SHA-256s of the latest loads, oldest first

    def loaded_since(self, count: int) -> list[str]:
        """The SHA-256s of the loads after the first ``count`` ones (as far as the bounded history reaches)."""
        with self._lock:
            n = min(self.loads - count, len(self.loaded))
            return list(islice(self.loaded, len(self.loaded) - n, None)) if n > 0 else []

    def __contains__(self, key) -> bool:
        """``(sha, format)`` (or a bare SHA-256: the default format) is loaded."""
        return (key if isinstance(key, tuple) else (key, MODEL_FORMAT)) in self._models

    def get(self, blob_or_loader, sha: str, *, where: str = "", versions: str | None = None,
            model_format: str | None = MODEL_FORMAT, policy: LoadPolicy | None = None) -> object:
        """The model of ``sha`` in ``model_format``, deserialized on first use (checksum, format and trusted types
        checked first, see ``loads``; a library-version mismatch warns once, at that load). Keyed by (SHA-256,
        format), and the policy is checked on every hit too: a cached pickle never serves a skops-only run."""
        fmt = model_format or MODEL_FORMAT
        key = (sha, fmt)
        with self._lock:
            entry = self._models.get(key)
            if entry is not None:
                check_policy(fmt, policy, where)
                self._models.move_to_end(key)
                return entry[0]
            blob = blob_or_loader() if callable(blob_or_loader) else blob_or_loader
            model = loads(blob, sha, where=where, model_format=fmt, policy=policy)
            warn_on_version_mismatch(versions, where)
            self._models[key] = (model, len(blob))
            self.bytes += len(blob)
            self.loads += 1
            self.loaded.append(sha)
            self._evict()
        return model

    def limit(self, max_bytes: int) -> None:
        """Set the bound (``cache_bytes``), dropping least recently used models now if it is exceeded."""
        with self._lock:
            self.max_bytes = max_bytes
            self._evict()

    def _evict(self) -> None:
        while self.bytes > self.max_bytes and len(self._models) > 1:
            _, (_, size) = self._models.popitem(last=False)
            self.bytes -= size
            self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
            self.bytes = 0
            self.evictions = 0
            self.loads = 0
            self.loaded.clear()


MODEL_CACHE = ModelCache()
