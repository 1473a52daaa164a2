"""Model bytes with checksums, library versions, and a per-process cache of loaded models.

Pickles execute code when loaded, so every blob carries a SHA-256 that is checked before it is
deserialized. The cache lives in this importable module, so a Python worker (or a pyfunc
process) loads each model at most once, keyed by the checksum.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import platform
import threading
import warnings
from functools import lru_cache

import joblib

MODEL_FORMAT = "pickle5"  # C pickler, protocol 5: ~10x faster than joblib's pure-Python pickler for small models


class ModelIntegrityError(ValueError):
    """A model blob does not match its recorded SHA-256."""


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def dumps(model: object) -> bytes:
    return pickle.dumps(model, protocol=5)


def loads(blob: bytes, expected_sha256: str, *, where: str = "") -> object:
    """Verify ``blob`` against ``expected_sha256``, then unpickle it.

    ``where`` names the model (group key, run) in the error raised on a mismatch.
    """
    actual = sha256(blob)
    if actual != expected_sha256:
        raise ModelIntegrityError(
            f"Refusing to load model {where or '(unnamed)'}: its SHA-256 is {actual} but the model "
            f"table recorded {expected_sha256}. The blob was changed after training; retrain the "
            "group or restore the original model table."
        )
    return pickle.loads(blob)


@lru_cache(maxsize=1)
def library_versions() -> str:
    """JSON of the library versions that matter for unpickling, computed once per process."""
    import numpy
    import pandas
    import sklearn

    return json.dumps(
        {
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "numpy": numpy.__version__,
            "pandas": pandas.__version__,
            "joblib": joblib.__version__,
        },
        sort_keys=True,
    )


def warn_on_version_mismatch(recorded: str | None, where: str = "") -> None:
    if not recorded:
        return
    trained = json.loads(recorded)
    current = json.loads(library_versions())
    diffs = {k: (v, current.get(k)) for k, v in trained.items() if k != "python" and current.get(k) != v}
    if diffs:
        text = ", ".join(f"{k} trained with {a}, loading with {b}" for k, (a, b) in sorted(diffs.items()))
        warnings.warn(f"Model {where}: library version mismatch ({text}).", RuntimeWarning, stacklevel=3)


class ModelCache:
    """Loaded models keyed by SHA-256; each blob is deserialized at most once per process."""

    def __init__(self) -> None:
        self._models: dict[str, object] = {}
        self._lock = threading.Lock()
        self.loads = 0  # how many blobs were actually deserialized (tests count this)
        self.loaded: list[str] = []  # their SHA-256s, in load order

    def __contains__(self, sha: str) -> bool:
        return sha in self._models

    def get(self, blob_or_loader, sha: str, *, where: str = "", versions: str | None = None) -> object:
        model = self._models.get(sha)
        if model is not None:
            return model
        with self._lock:
            model = self._models.get(sha)
            if model is None:
                blob = blob_or_loader() if callable(blob_or_loader) else blob_or_loader
                model = loads(blob, sha, where=where)
                warn_on_version_mismatch(versions, where)
                self._models[sha] = model
                self.loads += 1
                self.loaded.append(sha)
        return model

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
            self.loads = 0
            self.loaded = []


MODEL_CACHE = ModelCache()
