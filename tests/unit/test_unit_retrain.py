"""Which groups a run retrains and which it carries over (pure pandas, no Spark)."""
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, Ridge

from manymodels.core.retrain import data_fingerprints, plan_retrain, spec_fingerprint
from manymodels.core.spec import TrainSpec
from manymodels.errors import InputError

KEYS = ["store"]


def spec(**kw):
    base = dict(group_cols=("store",), feature_cols=("x0", "x1"), label_col="y", estimator=Ridge(alpha=1.0))
    return TrainSpec(**{**base, **kw})


def current(fps: dict) -> pd.DataFrame:
    return pd.DataFrame({"store": list(fps), "count": [10] * len(fps), "data_fingerprint": list(fps.values())})


def previous(rows: list[tuple], spec_fp: str) -> pd.DataFrame:
    return pd.DataFrame([{"store": k, "status": s, "data_fingerprint": fp, "spec_fingerprint": spec_fp,
                          "training_run_id": "run-a", "carried_from": None} for k, s, fp in rows])


def test_spec_fingerprint_ignores_the_run_name_and_sees_every_model_input():
    fp = spec_fingerprint(spec())
    assert fp == spec_fingerprint(spec(training_run_id="another-run"))
    assert fp == spec_fingerprint(spec(estimator=Ridge(alpha=1.0)))  # a fresh but equal estimator
    changed = [spec(estimator=Ridge(alpha=2.0)), spec(estimator=LinearRegression()), spec(seed=7),
               spec(feature_cols=("x0",)), spec(label_col="z"), spec(holdout_fraction=0.3), spec(min_rows=5)]
    fps = {spec_fingerprint(s) for s in changed}
    assert fp not in fps and len(fps) == len(changed)


def test_data_fingerprints_are_rows_and_both_hash_sums():
    stats = pd.DataFrame({"count": [3, 3], "_mm_h_low": [255, 1], "_mm_h_high": [16, 1]})
    assert data_fingerprints(stats).tolist() == ["3-ff-10", "3-1-1"]


def test_changed_mode_trains_changed_new_and_failed_groups_and_carries_the_rest():
    fp = spec_fingerprint(spec())
    prev = previous([("a", "ok", "f1"), ("b", "ok", "f2"), ("c", "failed", "f3"), ("d", "skipped", "f4"),
                     ("gone", "ok", "f9")], fp)
    cur = current({"a": "f1", "b": "CHANGED", "c": "f3", "d": "f4", "new": "f5"})
    train, carry = plan_retrain(cur, prev, KEYS, "changed", fp)
    assert sorted(train["store"]) == ["b", "c", "new"]
    assert sorted(carry["store"]) == ["a", "d"]  # "gone" is not in the input: not carried
    assert list(train.columns) == list(cur.columns)


def test_changed_mode_retrains_everything_when_the_spec_changed():
    prev = previous([("a", "ok", "f1"), ("b", "ok", "f2")], "old-spec")
    train, carry = plan_retrain(current({"a": "f1", "b": "f2"}), prev, KEYS, "changed", "new-spec")
    assert sorted(train["store"]) == ["a", "b"] and carry.empty


def test_failed_mode_trains_failed_and_new_groups_even_if_others_changed():
    fp = spec_fingerprint(spec())
    prev = previous([("a", "ok", "f1"), ("b", "failed", "f2"), ("c", "skipped", "f3")], fp)
    train, carry = plan_retrain(current({"a": "CHANGED", "b": "f2", "c": "f3", "new": "f4"}), prev, KEYS, "failed", fp)
    assert sorted(train["store"]) == ["b", "new"]
    assert sorted(carry["store"]) == ["a", "c"]


def test_failed_mode_refuses_to_carry_models_of_another_spec():
    prev = previous([("a", "ok", "f1"), ("b", "failed", "f2")], "old-spec")
    with pytest.raises(InputError, match=r"retrain='failed'.*different spec.*old-spec.*new-spec.*retrain='changed'"):
        plan_retrain(current({"a": "f1", "b": "f2"}), prev, KEYS, "failed", "new-spec", location="/t")


@pytest.mark.parametrize("mode", ["failed", "changed"])
def test_without_a_previous_table_every_group_is_trained(mode):
    train, carry = plan_retrain(current({"a": "f1", "b": "f2"}), None, KEYS, mode, "fp")
    assert len(train) == 2 and carry.empty


def test_an_unknown_mode_is_refused_with_the_choices():
    with pytest.raises(InputError, match=r"retrain='some'.*'all', 'failed', 'changed'"):
        plan_retrain(current({"a": "f1"}), None, KEYS, "some", "fp")


@pytest.mark.parametrize("module_name", ["sklearn", "numpy"])
def test_a_library_upgrade_changes_the_spec_fingerprint_and_retrains_every_group(monkeypatch, module_name):
    """scikit-learn and numpy decide the model bytes: after an upgrade, retrain='changed' carries nothing over."""
    import importlib

    before = spec_fingerprint(spec())
    prev = previous([("a", "ok", "f1"), ("b", "ok", "f2")], before)
    module = importlib.import_module(module_name)
    monkeypatch.setattr(module, "__version__", module.__version__ + ".post99")
    after = spec_fingerprint(spec())
    assert after != before
    train, carry = plan_retrain(current({"a": "f1", "b": "f2"}), prev, KEYS, "changed", after)
    assert sorted(train["store"]) == ["a", "b"] and carry.empty
    monkeypatch.undo()
    assert spec_fingerprint(spec()) == before  # read at call time, not cached


def test_the_estimators_own_package_version_is_part_of_the_spec_fingerprint(monkeypatch):
    """An estimator from another package (xgboost, lightgbm, ...): its version decides the bytes too."""
    import sys
    import types

    from sklearn.base import BaseEstimator
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    package = types.ModuleType("mm_fake_boost")
    package.__version__ = "1.0"

    class Booster(BaseEstimator):
        def fit(self, X, y=None):
            return self

    Booster.__module__ = "mm_fake_boost"
    monkeypatch.setitem(sys.modules, "mm_fake_boost", package)
    alone, inside = spec(estimator=Booster()), spec(estimator=make_pipeline(StandardScaler(), Booster()))
    before = spec_fingerprint(alone), spec_fingerprint(inside)
    monkeypatch.setattr(package, "__version__", "2.0")
    after = spec_fingerprint(alone), spec_fingerprint(inside)
    assert before[0] != after[0] and before[1] != after[1]
