import io
import json
import re
import warnings
import zipfile

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.tree import DecisionTreeRegressor

from manymodels import settings
from manymodels.core import model_bytes, model_cache
from manymodels.core.model_bytes import LoadPolicy, ModelIntegrityError, UntrustedModelError
from manymodels.core.model_cache import ModelCache
from manymodels.core.spec import TrainSpec
from manymodels.errors import InputError


def test_tampered_blob_is_refused_before_unpickling():
    blob = model_bytes.dumps(LinearRegression())
    sha = model_bytes.sha256(blob)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(ModelIntegrityError, match="group store=1 of run r1"):
        model_bytes.loads(tampered, sha, where="group store=1 of run r1")


def test_cache_loads_each_model_once():
    cache = ModelCache()
    blob = model_bytes.dumps(LinearRegression())
    sha = model_bytes.sha256(blob)
    calls = []
    for _ in range(5):
        cache.get(lambda: calls.append(1) or blob, sha)
    assert cache.loads == 1 and len(calls) == 1


def _models(n: int) -> list[tuple[bytes, str]]:
    blobs = [model_bytes.dumps(LinearRegression().fit([[0.0], [1.0]], [0.0, float(i)])) for i in range(n)]
    return [(b, model_bytes.sha256(b)) for b in blobs]


def test_cache_bound_drops_the_least_recently_used_model():
    (a, sa), (b, sb), (c, sc) = _models(3)
    cache = ModelCache(max_bytes=len(a) + len(b))  # room for two
    cache.get(a, sa)
    cache.get(b, sb)
    cache.get(a, sa)  # a is now the most recently used: b goes first
    cache.get(c, sc)
    assert sa in cache and sc in cache and sb not in cache
    assert cache.evictions == 1 and cache.bytes == len(a) + len(c) and cache.loads == 3
    cache.get(b, sb)  # needed again: loaded (and checked) again, dropping a, now the least recently used
    assert cache.loads == 4 and cache.loaded[-1] == sb and sa not in cache


def test_cache_load_history_is_bounded_and_lists_the_loads_after_a_count():
    models = _models(5)
    cache = ModelCache(history=3)
    for blob, sha in models:
        cache.get(blob, sha)
    shas = [sha for _, sha in models]
    assert cache.loads == 5 and list(cache.loaded) == shas[2:]  # the oldest two are forgotten, not kept forever
    assert cache.loaded_since(3) == shas[3:] and cache.loaded_since(5) == [] and cache.loaded_since(0) == shas[2:]
    cache.clear()
    assert cache.loaded_since(0) == [] and len(cache.loaded) == 0


def test_cache_keeps_a_model_larger_than_its_bound():
    (a, sa), (b, sb) = _models(2)
    cache = ModelCache(max_bytes=1)
    first = cache.get(a, sa)
    assert cache.get(a, sa) is first and cache.loads == 1  # the newest model always stays
    cache.get(b, sb)
    assert sb in cache and sa not in cache and cache.bytes == len(b)
    cache.limit(0)
    assert sb in cache  # lowering the bound never drops the model just used


def test_cache_bound_setting_is_checked(monkeypatch):
    monkeypatch.delenv(settings.CACHE_ENV, raising=False)
    assert model_cache.cache_bytes() == model_cache.DEFAULT_CACHE_MB * 2**20
    assert model_cache.cache_bytes(0.5) == 2**19
    monkeypatch.setenv(settings.CACHE_ENV, "256")
    assert model_cache.cache_bytes() == 256 * 2**20
    for bad in ("lots", "0", "-5", "inf"):
        monkeypatch.setenv(settings.CACHE_ENV, bad)
        with pytest.raises(ValueError, match=rf"MANYMODELS_MODEL_CACHE_MB='{re.escape(bad)}': expected a positive"):
            model_cache.cache_bytes()
    with pytest.raises(ValueError, match=r"model_cache_mb=-1: expected a positive number of megabytes"):
        model_cache.cache_bytes(-1)


def test_version_mismatch_warns_with_both_versions():
    recorded = json.loads(model_bytes.library_versions())
    recorded["scikit-learn"] = "0.0.1"
    with pytest.warns(RuntimeWarning, match=r"scikit-learn trained with 0.0.1, loading with \d"):
        model_bytes.warn_on_version_mismatch(json.dumps(recorded), "group a=1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model_bytes.warn_on_version_mismatch(model_bytes.library_versions(), "group a=1")


# ---------------------------------------------------------------- formats: skops with explicit trusted types




X = np.random.default_rng(3).normal(size=(40, 3))
Y = X @ [1.0, -2.0, 0.5] + 0.1


def skops_policy(*extra):
    return LoadPolicy("skops", model_bytes.trusted_types(tuple(extra)))


def test_skops_round_trip_predicts_exactly_like_pickle():
    model = make_pipeline(StandardScaler(), LinearRegression()).fit(X, Y)
    blob = model_bytes.dumps(model, "skops")
    assert blob[:4] == b"PK\x03\x04" and model_bytes.extension("skops") == "skops"
    back = model_bytes.loads(blob, model_bytes.sha256(blob), model_format="skops", policy=skops_policy())
    via_pickle = model_bytes.loads(model_bytes.dumps(model), model_bytes.sha256(model_bytes.dumps(model)))
    np.testing.assert_array_equal(back.predict(X), via_pickle.predict(X))


def test_default_trusted_types_cover_the_linear_models():
    import sklearn.linear_model as lm

    for name in ("LinearRegression", "Ridge", "Lasso", "ElasticNet", "HuberRegressor", "SGDRegressor"):
        blob = model_bytes.dumps(getattr(lm, name)().fit(X, Y), "skops")
        assert model_bytes.untrusted_types(blob, model_bytes.DEFAULT_TRUSTED_TYPES) == [], name
    for model in (lm.LogisticRegression().fit(X, Y > 0), lm.SGDClassifier().fit(X, Y > 0),
                  lm.PoissonRegressor().fit(X, np.exp(Y / 4))):
        model_bytes.loads(b := model_bytes.dumps(model, "skops"), model_bytes.sha256(b),
                            model_format="skops", policy=skops_policy())


def test_untrusted_types_are_refused_at_training_and_at_load_naming_group_types_and_fix():
    model = make_pipeline(FunctionTransformer(np.log1p), LinearRegression()).fit(np.abs(X), Y)
    with pytest.raises(UntrustedModelError, match=r"numpy\.log1p.*trusted_types"):
        model_bytes.dumps(model, "skops")  # skops itself would trust numpy.log1p: our list is explicit
    extra = ("numpy.log1p", "sklearn.preprocessing.FunctionTransformer")
    blob = model_bytes.dumps(model, "skops", model_bytes.trusted_types(extra))
    sha = model_bytes.sha256(blob)
    with pytest.raises(UntrustedModelError) as err:
        model_bytes.loads(blob, sha, where="group store=1 of training run r9", model_format="skops",
                            policy=skops_policy())
    text = str(err.value)
    assert "group store=1 of training run r9" in text and "'numpy.log1p'" in text
    assert "sklearn.preprocessing._function_transformer.FunctionTransformer" in text and "trusted_types" in text
    back = model_bytes.loads(blob, sha, model_format="skops", policy=skops_policy(*extra))
    np.testing.assert_array_equal(back.predict(np.abs(X)), model.predict(np.abs(X)))


def test_tree_types_need_listing_by_their_full_or_public_path():
    blob = model_bytes.dumps(tree := DecisionTreeRegressor(max_depth=2).fit(X, Y), "skops",
                               model_bytes.trusted_types(("sklearn.tree.DecisionTreeRegressor",
                                                            "sklearn.tree._tree.Tree")))
    assert model_bytes.untrusted_types(blob, model_bytes.DEFAULT_TRUSTED_TYPES) == [
        "sklearn.tree._classes.DecisionTreeRegressor", "sklearn.tree._tree.Tree"]
    back = model_bytes.loads(blob, model_bytes.sha256(blob), model_format="skops",
                               policy=skops_policy("sklearn.tree.DecisionTreeRegressor", "sklearn.tree._tree.Tree"))
    np.testing.assert_array_equal(back.predict(X), tree.predict(X))


def _forged(blob: bytes) -> bytes:
    """The skops file with a reference to ``os.system`` slipped into its schema."""
    src = zipfile.ZipFile(io.BytesIO(blob))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "schema.json":
                schema = json.loads(data)
                schema["content"]["content"]["evil"] = {"__class__": "system", "__module__": "os",
                                                        "__loader__": "FunctionNode", "__id__": 1,
                                                        "content": {"module_path": "os", "function": "system"}}
                data = json.dumps(schema).encode()
            dst.writestr(name, data)
    return out.getvalue()


def test_forged_skops_blob_with_a_matching_checksum_is_still_refused_by_the_trusted_list():
    forged = _forged(model_bytes.dumps(LinearRegression().fit(X, Y), "skops"))
    with pytest.raises(UntrustedModelError, match=r"group g=7.*\['os\.system'\]"):
        model_bytes.loads(forged, model_bytes.sha256(forged), where="group g=7", model_format="skops",
                            policy=skops_policy())


def test_tampered_skops_blob_is_refused_before_it_is_parsed():
    blob = model_bytes.dumps(LinearRegression().fit(X, Y), "skops")
    with pytest.raises(ModelIntegrityError, match="group g=2 of training run r"):
        model_bytes.loads(blob[:-3] + b"xyz", model_bytes.sha256(blob), where="group g=2 of training run r",
                            model_format="skops", policy=skops_policy())


def test_a_skops_run_never_unpickles():
    blob = model_bytes.dumps(LinearRegression().fit(X, Y))  # a pickle, checksum and all, in a skops store
    with pytest.raises(UntrustedModelError, match="group g=3.*'pickle5'.*only skops"):
        model_bytes.loads(blob, model_bytes.sha256(blob), where="group g=3", model_format="pickle5",
                            policy=skops_policy())
    with pytest.raises(UntrustedModelError, match="'joblib'"):
        model_bytes.loads(blob, model_bytes.sha256(blob), model_format="joblib")


def test_load_policy_round_trips_and_follows_the_spec():
    spec = TrainSpec(("g",), ("x",), "y", LinearRegression(), model_format="skops",
                     trusted_types=["sklearn.tree._tree.Tree"])
    policy = LoadPolicy.of(spec)
    assert policy.model_format == "skops" and "sklearn.tree._tree.Tree" in policy.trusted_types
    assert set(model_bytes.DEFAULT_TRUSTED_TYPES) <= set(policy.trusted_types)
    assert LoadPolicy.from_json(policy.to_json()) == policy and LoadPolicy.from_json(None).model_format == "pickle5"
    assert LoadPolicy.of(TrainSpec(("g",), ("x",), "y", LinearRegression())).model_format == "pickle5"


@pytest.mark.parametrize("settings,needle", [
    ({"model_format": "joblib"}, "model_format='joblib': expected one of ('pickle5', 'skops')"),
    ({"trusted_types": ["sklearn.tree._tree.Tree"]}, "only applies to model_format='skops'"),
    ({"model_format": "skops", "trusted_types": ["Tree"]}, "fully qualified type names"),
])
def test_bad_format_settings_are_input_errors(settings, needle):
    with pytest.raises(InputError, match=re.escape(needle)):
        TrainSpec(("g",), ("x",), "y", LinearRegression(), **settings)


def test_skops_rows_record_the_skops_version_and_mismatches_warn():
    recorded = json.loads(model_bytes.library_versions("skops"))
    assert "skops" in recorded and "skops" not in json.loads(model_bytes.library_versions())
    recorded["skops"] = "0.0.2"
    with pytest.warns(RuntimeWarning, match=r"skops trained with 0\.0\.2, loading with \d"):
        model_bytes.warn_on_version_mismatch(json.dumps(recorded), "group a=1")
