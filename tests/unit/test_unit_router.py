"""Routing logic and the packed model store of the registered router, without MLflow's loading machinery."""
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from manymodels.core import model_bytes, routing
from manymodels.core.model_bytes import ModelIntegrityError
from manymodels.core.model_cache import MODEL_CACHE
from manymodels.core.routing import route_predict
from manymodels.storage import packed_store
from manymodels.storage.packed_store import PackedModels, read_blobs, read_index


def fitted(slope: float):
    return LinearRegression().fit(np.array([[0.0], [1.0]]), np.array([1.0, 1.0 + slope]))


def make_index():
    blob = model_bytes.dumps(fitted(2.0))
    sha = model_bytes.sha256(blob)
    versions = model_bytes.library_versions()
    index = {("1",): {"status": "ok", "error": None, "model_sha256": sha, "library_versions": versions},
             ("2",): {"status": "skipped", "error": "3 rows", "model_sha256": None, "library_versions": versions}}
    return index, {sha: blob}


def loader(blobs, calls=None):
    def load(entries):
        if calls is not None:
            calls.append(len(entries))
        return {e["model_sha256"]: blobs[e["model_sha256"]] for e in entries}
    return load


def test_rows_are_routed_and_unknown_groups_reported():
    MODEL_CACHE.clear()
    index, blobs = make_index()
    calls = []
    df = pd.DataFrame({"a": [1, 9, 1, 2], "x": [0.0, 1.0, 1.0, 1.0]})
    out = route_predict(df, key_cols=["a"], feature_cols=["x"], index=index, load_blobs=loader(blobs, calls),
                        run_label="training run r")
    assert out["prediction"].iloc[[0, 2]].tolist() == pytest.approx([1.0, 3.0])
    assert out["status"].tolist() == ["ok", "unknown_group", "ok", "skipped"]
    assert out["error"].iloc[1] == "no model for group a=9 in training run r"
    assert "group a=2 has no model: skipped" in out["error"].iloc[3]
    assert np.isnan(out["prediction"].iloc[1])
    route_predict(df, key_cols=["a"], feature_cols=["x"], index=index, load_blobs=loader(blobs, calls))
    assert MODEL_CACHE.loads == 1 and calls == [1]  # the second batch found the model cached


def test_models_dropped_by_the_cache_bound_mid_batch_are_fetched_again(monkeypatch):
    """A worker holding more models than its bound: a model cached when the batch starts can be dropped
    before its group comes up; it is fetched and loaded again, and every row is still scored."""
    MODEL_CACHE.clear()
    models = {str(g): fitted(float(g)) for g in range(1, 5)}
    blobs = {}
    index = {}
    for g, model in models.items():
        blob = model_bytes.dumps(model)
        sha = model_bytes.sha256(blob)
        blobs[sha] = blob
        index[(g,)] = {"status": "ok", "error": None, "model_sha256": sha,
                       "library_versions": model_bytes.library_versions()}
    monkeypatch.setattr(MODEL_CACHE, "max_bytes", 2 * max(len(b) for b in blobs.values()))  # two at a time
    df = pd.DataFrame({"a": [1, 2, 3, 4], "x": [1.0, 1.0, 1.0, 1.0]})
    route_predict(df.iloc[:2], key_cols=["a"], feature_cols=["x"], index=index, load_blobs=loader(blobs))
    calls = []  # groups 1 and 2 are cached; loading 3 and 4 drops them, then the second pass needs them back
    out = route_predict(pd.concat([df.iloc[2:], df.iloc[:2]]), key_cols=["a"], feature_cols=["x"], index=index,
                        load_blobs=loader(blobs, calls))
    assert out["status"].eq("ok").all()
    assert out["prediction"].tolist() == pytest.approx([4.0, 5.0, 2.0, 3.0])  # 1 + slope, the slope = group
    assert calls == [2, 1, 1] and MODEL_CACHE.evictions >= 2 and len(MODEL_CACHE.loaded) == 6
    MODEL_CACHE.clear()


def test_a_nan_feature_keeps_scikit_learns_own_check():
    """The batch's one NaN/inf scan lets finite batches skip the per-group scans; a batch with a NaN keeps
    them, so a model that refuses NaN still says so (on that row) instead of predicting from it."""
    MODEL_CACHE.clear()
    index, blobs = make_index()
    df = pd.DataFrame({"a": [1, 1], "x": [0.0, 1.0]})
    out = route_predict(df, key_cols=["a"], feature_cols=["x"], index=index, load_blobs=loader(blobs))
    assert out["prediction"].tolist() == pytest.approx([1.0, 3.0])
    out = route_predict(df.assign(x=[0.0, np.nan]), key_cols=["a"], feature_cols=["x"], index=index,
                        load_blobs=loader(blobs))
    assert out["status"].tolist() == ["ok", routing.PREDICT_FAILED] and np.isnan(out["prediction"].iloc[1])
    assert "ValueError" in out["error"].iloc[1] and "NaN" in out["error"].iloc[1]


def test_tampered_model_is_refused():
    MODEL_CACHE.clear()
    index, blobs = make_index()
    sha = index[("1",)]["model_sha256"]
    blobs[sha] = blobs[sha] + b"evil"
    # the tampered group's rows are refused with the reason (group and run named); nothing is unpickled
    out = route_predict(pd.DataFrame({"a": [1], "x": [0.0]}), key_cols=["a"], feature_cols=["x"], index=index,
                        load_blobs=loader(blobs), run_label="training run r")
    assert out["status"].tolist() == [routing.REFUSED] and np.isnan(out["prediction"].iloc[0])
    assert out["error"].iloc[0].startswith(ModelIntegrityError.__name__) and "group a=1 of training run r" in \
        out["error"].iloc[0]
    assert sha not in MODEL_CACHE and MODEL_CACHE.loads == 0


def test_packed_store_round_trip_across_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(packed_store, "ROW_GROUP", 4)
    models = [model_bytes.dumps(fitted(float(i))) for i in range(10)]
    batch = pd.DataFrame({"g": range(10), "status": ["ok"] * 9 + ["failed"], "error": [None] * 9 + ["boom"],
                          "model_sha256": [model_bytes.sha256(b) for b in models[:9]] + [None],
                          "library_versions": "{}", "model": models[:9] + [None]})
    with PackedModels(tmp_path) as packed:
        packed.add(batch.iloc[:3], ["g"])
        packed.add(batch.iloc[3:], ["g"])
    index = read_index(tmp_path / "models.parquet")
    assert len(index) == 10 and {e["row_group"] for e in index.values()} == {0, 1, 2}
    assert index[("9",)]["status"] == "failed" and index[("9",)]["error"] == "boom"
    wanted = [index[(str(i),)] for i in (0, 5, 8)]
    blobs = read_blobs(tmp_path / "models.parquet", wanted)
    assert [blobs[e["model_sha256"]] for e in wanted] == [models[0], models[5], models[8]]


def test_packed_store_with_no_groups(tmp_path):
    with PackedModels(tmp_path):
        pass
    assert read_index(tmp_path / "models.parquet") == {}
