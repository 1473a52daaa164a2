"""The pure pandas core: no Spark."""
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from manymodels.core import model_bytes
from manymodels.core.fitting import GroupFitError, fit_group, fit_packed, fit_stream
from manymodels.core.keys import group_seed, key_path
from manymodels.core.packing import group_bounds
from manymodels.core.schema import FIXED_NAMES
from manymodels.core.spec import TrainSpec


def spec_for(rows, estimator=None, **kw):
    return TrainSpec(group_cols=("store", "item"), feature_cols=("x0", "x1", "x2"), label_col="y",
                     estimator=LinearRegression() if estimator is None else estimator, training_run_id="t1", **kw)


def one_group(rows):
    key = (int(rows["store"].iloc[0]), int(rows["item"].iloc[0]))
    return key, rows[(rows["store"] == key[0]) & (rows["item"] == key[1])]


def test_fit_group_recovers_truth_and_fills_every_column(small_panel):
    _, rows, truth = small_panel
    key, part = one_group(rows)
    row = fit_group(key, part, spec=spec_for(rows, holdout_fraction=0.0))
    assert row["status"] == "ok" and row["error"] is None
    assert set(FIXED_NAMES) <= set(row)
    model = model_bytes.loads(row["model"], row["model_sha256"])
    t = truth[(truth["store"] == key[0]) & (truth["item"] == key[1])].iloc[0]
    np.testing.assert_allclose(model.coef_, [t["beta_0"], t["beta_1"], t["beta_2"]], atol=0.3)
    assert row["train_r2"] > 0.9 and np.isnan(row["holdout_r2"]) and row["n_holdout"] == 0


def test_holdout_split_is_seeded_by_key(small_panel):
    _, rows, _ = small_panel
    key, part = one_group(rows)
    spec = spec_for(rows)
    a, b = fit_group(key, part, spec=spec), fit_group(key, part, spec=spec)
    assert a["model_sha256"] == b["model_sha256"] and a["seed"] == group_seed(42, key)
    assert a["n_train"] + a["n_holdout"] == len(part) and a["n_holdout"] == int(len(part) * 0.2)
    assert not np.isnan(a["holdout_rmse"])


def test_random_state_is_derived_from_seed_and_key(small_panel):
    _, rows, _ = small_panel
    key, part = one_group(rows)
    row = fit_group(key, part, spec=spec_for(rows, RandomForestRegressor(n_estimators=3)))
    model = model_bytes.loads(row["model"], row["model_sha256"])
    assert model.random_state == group_seed(42, key)
    other = fit_group(key, part, spec=spec_for(rows, RandomForestRegressor(n_estimators=3), seed=7))
    assert model_bytes.loads(other["model"], other["model_sha256"]).random_state == group_seed(7, key)


def test_too_few_rows_and_null_labels_are_skipped_with_reason(small_panel):
    _, rows, _ = small_panel
    key, part = one_group(rows)
    small = fit_group(key, part.head(3), spec=spec_for(rows))
    assert small["status"] == "skipped" and "fewer than min_rows=10" in small["error"]
    nulls = part.assign(y=np.nan)
    skipped = fit_group(key, nulls, spec=spec_for(rows))
    assert skipped["status"] == "skipped" and "labels in column 'y' are null" in skipped["error"]
    assert skipped["model"] is None


def test_failure_policy_record_and_raise(small_panel):
    _, rows, _ = small_panel
    key, part = one_group(rows)
    bad = part.assign(x0=np.nan)  # LinearRegression refuses NaN
    row = fit_group(key, bad, spec=spec_for(rows, failure_policy="record"))
    assert row["status"] == "failed" and "ValueError" in row["error"] and "Traceback" in row["error"]
    with pytest.raises(GroupFitError, match=r"group store=\d+, item=\d+"):
        fit_group(key, bad, spec=spec_for(rows, failure_policy="raise"))


def test_classification_metrics(small_panel):
    _, rows, _ = small_panel
    key, part = one_group(rows)
    part = part.assign(y=(part["y"] > part["y"].median()).astype(int))
    row = fit_group(key, part, spec=spec_for(rows, make_pipeline(StandardScaler(), LogisticRegression())))
    assert row["status"] == "ok"
    assert 0 <= row["train_accuracy"] <= 1 and row["train_log_loss"] > 0 and 0 <= row["train_roc_auc"] <= 1
    assert np.isnan(row["train_r2"])


def test_group_bounds_and_packed_equals_per_group(small_panel):
    _, rows, _ = small_panel
    sorted_rows = rows.sort_values(["store", "item"], kind="stable").reset_index(drop=True)
    bounds = group_bounds(sorted_rows, ("store", "item"))
    assert len(bounds) == rows.groupby(["store", "item"]).ngroups
    assert bounds[0][1] == 0 and bounds[-1][2] == len(sorted_rows)
    spec = spec_for(rows)
    packed = fit_packed(sorted_rows, spec=spec)
    loop = pd.DataFrame([fit_group(k, g, spec=spec) for k, g in sorted_rows.groupby(["store", "item"])])
    assert list(packed["model_sha256"]) == list(loop["model_sha256"])


def test_stream_carries_groups_across_batch_boundaries(small_panel):
    _, rows, _ = small_panel
    sorted_rows = rows.sort_values(["store", "item"], kind="stable").reset_index(drop=True)
    spec = spec_for(rows)
    batches = [sorted_rows.iloc[i:i + 37] for i in range(0, len(sorted_rows), 37)]  # cuts groups apart
    streamed = pd.concat(list(fit_stream(iter(batches), spec=spec)), ignore_index=True)
    whole = fit_packed(sorted_rows, spec=spec)
    assert len(streamed) == len(whole) == rows.groupby(["store", "item"]).ngroups
    assert sorted(streamed["model_sha256"]) == sorted(whole["model_sha256"])
    assert list(fit_stream(iter([]), spec=spec)) == []


def test_key_path_is_deterministic_and_safe():
    assert key_path(("store", "item"), (3, 17)) == "store=3/item=17"
    assert key_path(("store",), (3.0,)) == "store=3"
    assert key_path(("name",), ("a/b c",)) == "name=a~2Fb~20c"  # no %: MLflow decodes it when downloading
    assert group_seed(1, (3,)) == group_seed(1, (3.0,)) != group_seed(2, (3,))


def test_model_does_not_depend_on_row_arrival_order(small_panel):
    """After a shuffle, a group's rows arrive in fetch order: the model must not change with it."""
    _, rows, _ = small_panel
    key, part = one_group(rows)
    spec = spec_for(rows)
    shuffled = part.sample(frac=1.0, random_state=3)
    assert fit_group(key, part, spec=spec)["model_sha256"] == fit_group(key, shuffled, spec=spec)["model_sha256"]


def test_pass_dataframe_serves_pipelines_that_select_columns_by_name(small_panel):
    from sklearn.compose import ColumnTransformer

    _, rows, _ = small_panel
    key, part = one_group(rows)
    by_name = make_pipeline(ColumnTransformer([("keep", "passthrough", ["x0", "x2"])]), LinearRegression())
    failed = fit_group(key, part, spec=spec_for(rows, by_name))
    assert failed["status"] == "failed" and "pass_dataframe" not in failed["error"]
    row = fit_group(key, part, spec=spec_for(rows, by_name, pass_dataframe=True))
    assert row["status"] == "ok"
    model = model_bytes.loads(row["model"], row["model_sha256"])
    assert list(model.feature_names_in_) == ["x0", "x1", "x2"]


# ---------------------------------------------------------------- checks skipped only when known to pass

def _packed_vs_one_by_one(rows, estimator):
    spec = spec_for(rows, estimator)
    packed = fit_packed(rows.sort_values(["store", "item"]), spec=spec).set_index(["store", "item"])
    single = pd.DataFrame([fit_group(k, g, spec=spec) for k, g in rows.groupby(["store", "item"])])
    return packed, single.set_index(["store", "item"])


def test_packed_fits_skip_only_checks_that_pass_and_give_the_same_bytes(small_panel):
    from manymodels.core.estimators import _params_valid
    from manymodels.core.fitting import all_finite

    _, rows, _ = small_panel
    assert _params_valid(LinearRegression()) and _params_valid(make_pipeline(StandardScaler(), LinearRegression()))
    packed, single = _packed_vs_one_by_one(rows, LinearRegression())
    assert packed["status"].eq("ok").all()
    assert packed["model_sha256"].equals(single.loc[packed.index, "model_sha256"])  # fit_group: default checks
    assert not all_finite(np.array([[1.0, np.nan]]), np.array([1.0]))
    assert not all_finite(np.array([[1.0, 2.0]]), np.array([np.inf]))
    assert all_finite(np.array([[1.0, 2.0]]), np.array([np.nan]))  # a null label is dropped, not fitted


@pytest.mark.parametrize("estimator", [LinearRegression(positive="yes"),
                                       make_pipeline(StandardScaler(), LinearRegression(positive="yes"))],
                         ids=["estimator", "nested in a pipeline"])
def test_invalid_parameters_still_fail_every_group_with_sklearns_message(small_panel, estimator):
    from manymodels.core.estimators import _params_valid

    _, rows, _ = small_panel
    assert not _params_valid(estimator)
    packed, single = _packed_vs_one_by_one(rows, estimator)
    assert packed["status"].eq("failed").all()
    assert packed["error"].str.contains("InvalidParameterError: The 'positive' parameter").all()
    assert single["status"].eq("failed").all()


def test_a_nan_feature_keeps_the_checks_for_the_whole_batch(small_panel):
    from sklearn.ensemble import HistGradientBoostingRegressor

    _, rows, _ = small_panel
    rows = rows.copy()
    key = (rows["store"].iloc[0], rows["item"].iloc[0])
    rows.loc[rows.index[0], "x1"] = np.nan
    packed, _ = _packed_vs_one_by_one(rows, LinearRegression())
    assert packed.loc[key, "status"] == "failed" and "Input X contains NaN" in packed.loc[key, "error"]
    assert (packed.drop(index=[key])["status"] == "ok").all()
    hgb, _ = _packed_vs_one_by_one(rows, HistGradientBoostingRegressor(max_iter=5, min_samples_leaf=5))
    assert hgb["status"].eq("ok").all()  # an estimator that accepts NaN still gets it


def test_canonical_order_is_the_full_lexicographic_order():
    """The label-only shortcut (continuous labels without ties) must give exactly the order of the full
    sort by label then features, ties and already-sorted inputs included."""
    from manymodels.core.fitting import _canonical_order

    rng = np.random.default_rng(1)
    for t in range(2000):
        n = int(rng.integers(1, 40))
        X = rng.integers(0, 3, size=(n, 3)).astype(float)
        y = rng.integers(0, 4 if t % 2 else 10_000, size=n).astype(float)  # with and without ties
        if t % 5 == 0:
            y = np.sort(y)
        full = np.lexsort([X[:, 2], X[:, 1], X[:, 0], y])
        got = _canonical_order(X, y)
        if got is None:
            assert np.array_equal(full, np.arange(n))
        else:
            assert np.array_equal(got, full)
