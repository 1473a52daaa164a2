import json
import warnings

import pytest
from sklearn.linear_model import LinearRegression

from manymodels import serialization
from manymodels.serialization import ModelCache, ModelIntegrityError


def test_tampered_blob_is_refused_before_unpickling():
    blob = serialization.dumps(LinearRegression())
    sha = serialization.sha256(blob)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(ModelIntegrityError, match="group store=1 of run r1"):
        serialization.loads(tampered, sha, where="group store=1 of run r1")


def test_cache_loads_each_model_once():
    cache = ModelCache()
    blob = serialization.dumps(LinearRegression())
    sha = serialization.sha256(blob)
    calls = []
    for _ in range(5):
        cache.get(lambda: calls.append(1) or blob, sha)
    assert cache.loads == 1 and len(calls) == 1


def test_version_mismatch_warns_with_both_versions():
    recorded = json.loads(serialization.library_versions())
    recorded["scikit-learn"] = "0.0.1"
    with pytest.warns(RuntimeWarning, match=r"scikit-learn trained with 0.0.1, loading with \d"):
        serialization.warn_on_version_mismatch(json.dumps(recorded), "group a=1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        serialization.warn_on_version_mismatch(serialization.library_versions(), "group a=1")
