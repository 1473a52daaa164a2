"""Routing logic of the registered model, without MLflow's loading machinery."""
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from manymodels import serialization
from manymodels.router import route_predict
from manymodels.serialization import MODEL_CACHE, ModelIntegrityError


def make_index():
    model = LinearRegression().fit(np.array([[0.0], [1.0]]), np.array([1.0, 3.0]))
    blob = serialization.dumps(model)
    versions = serialization.library_versions()
    files = {"m/a=1": blob}
    index = {("1",): {"status": "ok", "error": None, "path": "m/a=1", "model_sha256": serialization.sha256(blob),
                      "library_versions": versions},
             ("2",): {"status": "skipped", "error": "3 rows", "path": None, "model_sha256": None,
                      "library_versions": versions}}
    return index, files


def test_rows_are_routed_and_unknown_groups_reported():
    MODEL_CACHE.clear()
    index, files = make_index()
    df = pd.DataFrame({"a": [1, 9, 1, 2], "x": [0.0, 1.0, 1.0, 1.0]})
    out = route_predict(df, key_cols=["a"], feature_cols=["x"], index=index, load_blob=files.__getitem__,
                        run_label="training run r")
    assert out["prediction"].iloc[[0, 2]].tolist() == pytest.approx([1.0, 3.0])
    assert out["status"].tolist() == ["ok", "unknown_group", "ok", "skipped"]
    assert out["error"].iloc[1] == "no model for group a=9 in training run r"
    assert "group a=2 has no model: skipped" in out["error"].iloc[3]
    assert np.isnan(out["prediction"].iloc[1])
    route_predict(df, key_cols=["a"], feature_cols=["x"], index=index, load_blob=files.__getitem__)
    assert MODEL_CACHE.loads == 1


def test_tampered_model_file_is_refused():
    MODEL_CACHE.clear()
    index, files = make_index()
    files["m/a=1"] = files["m/a=1"] + b"evil"
    df = pd.DataFrame({"a": [1], "x": [0.0]})
    with pytest.raises(ModelIntegrityError, match="group a=1"):
        route_predict(df, key_cols=["a"], feature_cols=["x"], index=index, load_blob=files.__getitem__)
