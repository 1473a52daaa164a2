"""The numpy fast path of scikit-learn's dataframe test (fastchecks.py): no Spark."""
import threading

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.utils import validation

from manymodels.core import fastchecks
from manymodels.core.fastchecks import numpy_fast_path


@pytest.fixture
def counted(monkeypatch):
    """scikit-learn's own test, wrapped to count what reaches it."""
    assert fastchecks.available()  # decided once, before the counting starts
    calls = []
    original = validation._nw_into_df_or_series

    def counting(x):
        calls.append(type(x).__name__)
        return original(x)

    monkeypatch.setattr(validation, "_nw_into_df_or_series", counting)
    return calls


def test_numpy_inputs_skip_the_test_and_everything_else_still_reaches_it(counted):
    X, y = np.random.default_rng(0).normal(size=(50, 3)), np.arange(50.0)
    with numpy_fast_path() as active:
        assert set(active) == set(fastchecks.ANSWERS)
        LinearRegression().fit(X, y).predict(X)
        assert counted == []
        assert validation._get_feature_names(X) is None
        frame = pd.DataFrame(X, columns=["a", "b", "c"])
        model = LinearRegression().fit(frame, y)
        assert "DataFrame" in counted  # a DataFrame is still recognised: feature names are kept
        assert list(model.feature_names_in_) == ["a", "b", "c"]
        assert validation._nw_into_df_or_series(pd.Series(y)) is True
        assert validation._nw_into_df_or_series(X.view(np.matrix)) is False and "matrix" in counted  # subclass: asked
    LinearRegression().fit(X, y)
    assert counted.count("ndarray") >= 2  # restored: numpy inputs are asked again


def test_nested_and_concurrent_uses_share_one_swap_and_restore_it(counted):
    wrapped = validation._nw_into_df_or_series
    with numpy_fast_path():
        inner = validation._nw_into_df_or_series
        assert inner is not wrapped and inner.original is wrapped
        with numpy_fast_path():
            assert validation._nw_into_df_or_series is inner
        assert validation._nw_into_df_or_series is inner  # the outer user still has it
        seen = []
        worker = threading.Thread(target=lambda: seen.append(_swap_seen_in_context()))
        worker.start()
        worker.join()
        assert seen == [inner] and validation._nw_into_df_or_series is inner
    assert validation._nw_into_df_or_series is wrapped


def _swap_seen_in_context():
    with numpy_fast_path():
        return validation._nw_into_df_or_series


def test_a_scikit_learn_without_the_test_or_with_another_answer_is_left_alone(monkeypatch):
    monkeypatch.delattr(validation, "_nw_into_df_or_series")
    monkeypatch.setattr(fastchecks, "_usable", None)
    with numpy_fast_path() as active:
        assert active == ("_get_feature_names",) and not hasattr(validation, "_nw_into_df_or_series")
    monkeypatch.setattr(validation, "_nw_into_df_or_series", lambda x: True, raising=False)
    monkeypatch.setattr(validation, "_get_feature_names", lambda x: np.array(["a", "b"], dtype=object))
    monkeypatch.setattr(fastchecks, "_usable", None)
    with numpy_fast_path() as active:
        assert active == () and validation._nw_into_df_or_series(np.zeros(2)) is True
        assert list(validation._get_feature_names(np.zeros((2, 2)))) == ["a", "b"]


def test_packed_training_never_asks_for_numpy_batches_and_keeps_the_bytes(counted, small_panel):
    from manymodels.core.fitting import fit_group, fit_packed
    from manymodels.core.spec import TrainSpec

    _, rows, _ = small_panel
    spec = TrainSpec(group_cols=("store", "item"), feature_cols=("x0", "x1", "x2"), label_col="y",
                     estimator=LinearRegression(), training_run_id="t1")
    packed = fit_packed(rows.sort_values(["store", "item"], kind="stable").reset_index(drop=True), spec=spec)
    assert packed["status"].eq("ok").all() and "ndarray" not in counted
    key = (packed["store"].iloc[0], packed["item"].iloc[0])
    alone = fit_group(key, rows[(rows["store"] == key[0]) & (rows["item"] == key[1])], spec=spec)
    assert "ndarray" in counted  # fit_group outside the fast path: scikit-learn's own test
    assert alone["model_sha256"] == packed["model_sha256"].iloc[0]
