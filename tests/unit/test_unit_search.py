"""The pure search core, without Spark: candidates, folds, tasks, cv_results, scheduling, bad input."""
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_regression
from sklearn.linear_model import Ridge
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    KFold,
    ParameterGrid,
    ParameterSampler,
    StratifiedKFold,
    TimeSeriesSplit,
)
from sklearn.tree import DecisionTreeClassifier

from manymodels.core import search as S
from manymodels.core.spec import TrainSpec
from manymodels.errors import InputError

FEATURES = [f"x{i}" for i in range(4)]


@pytest.fixture(scope="module")
def regression():
    X, y = make_regression(240, 4, noise=20.0, random_state=3)
    pdf = pd.DataFrame(X, columns=FEATURES)
    pdf["y"] = y
    pdf["cvg"] = np.arange(len(pdf)) % 8
    return pdf


def spec_for(**kw):
    base = dict(estimator=Ridge(), feature_cols=FEATURES, label_col="y", param_grid={"alpha": [0.1, 10.0, 1000.0]})
    return S.make_search_spec(**{**base, **kw})


def test_grid_candidates_follow_parameter_grid():
    grid = [{"alpha": [1, 2], "fit_intercept": [True, False]}, {"alpha": [5]}]
    assert S.make_candidates(grid) == list(ParameterGrid(grid))
    assert len(S.make_candidates({"alpha": [1, 2, 3]})) == 3


def test_random_candidates_are_seeded():
    from scipy.stats import loguniform

    dist = {"alpha": loguniform(1e-3, 1e3), "fit_intercept": [True, False]}
    a = S.make_candidates(param_distributions=dist, n_iter=6, seed=1)
    assert a == S.make_candidates(param_distributions=dist, n_iter=6, seed=1)
    assert a == [dict(p) for p in ParameterSampler(dist, 6, random_state=1)]
    assert a != S.make_candidates(param_distributions=dist, n_iter=6, seed=2)


@pytest.mark.parametrize("cv, expected", [(3, KFold(3)), ("kfold", KFold(4)), ("timeseries", TimeSeriesSplit(4)),
                                          ("group", GroupKFold(4))])
def test_folds_are_sklearns(regression, cv, expected):
    spec = spec_for(cv=cv, n_splits=4, cv_groups_col="cvg" if cv == "group" else None)
    X, y, g = regression[FEATURES].to_numpy(), regression["y"].to_numpy(), regression["cvg"].to_numpy()
    got = S.fold_splits(spec, X, y, g)
    want = list(expected.split(X, y, g))
    assert len(got) == spec.n_splits == expected.get_n_splits()
    for (tr, te), (tr2, te2) in zip(got, want):
        assert np.array_equal(tr, tr2) and np.array_equal(te, te2)


def test_int_cv_is_stratified_for_classifiers():
    X = np.arange(60, dtype=float).reshape(30, 2)
    y = np.array([0, 1, 1] * 10)
    spec = S.make_search_spec(estimator=DecisionTreeClassifier(), feature_cols=["a", "b"], label_col="y",
                              param_grid={"max_depth": [1, 2]}, cv=3)
    got = [te for _, te in S.fold_splits(spec, X, y)]
    want = [te for _, te in StratifiedKFold(3).split(X, y)]
    assert all(np.array_equal(a, b) for a, b in zip(got, want))


def test_local_search_equals_gridsearchcv(regression):
    grid = {"alpha": [0.01, 1.0, 100.0, 1e4], "fit_intercept": [True, False]}
    spec = spec_for(param_grid=grid, cv=4, scoring=["r2", "neg_mean_absolute_error"], refit="neg_mean_absolute_error")
    _, cv = S.search_local(regression, spec)
    X, y = regression[FEATURES].to_numpy(), regression["y"].to_numpy()
    gs = GridSearchCV(Ridge(), grid, cv=4, scoring=["r2", "neg_mean_absolute_error"],
                      refit="neg_mean_absolute_error").fit(X, y)
    for key in ("r2", "neg_mean_absolute_error"):
        for col in (f"mean_test_{key}", f"std_test_{key}", f"split3_test_{key}"):
            np.testing.assert_allclose(cv[col].to_numpy(), gs.cv_results_[col], rtol=0, atol=1e-9)
        assert cv[f"rank_test_{key}"].tolist() == gs.cv_results_[f"rank_test_{key}"].tolist()
    index, params, score = S.best_of(cv, spec)
    assert (index, params) == (gs.best_index_, gs.best_params_)
    assert abs(score - gs.best_score_) < 1e-9
    assert list(cv["params"]) == list(gs.cv_results_["params"])
    assert (cv["mean_fit_time"] > 0).all() and (cv["n_failed"] == 0).all()


def test_a_failing_candidate_scores_nan_ranks_last_and_keeps_its_error(regression):
    spec = spec_for(param_grid={"alpha": [1.0, -5.0]}, cv=3)  # Ridge refuses a negative alpha in fit
    tasks, cv = S.search_local(regression, spec)
    assert np.isnan(cv.loc[1, "mean_test_score"]) and cv.loc[1, "n_failed"] == 3
    assert cv["rank_test_score"].tolist() == [1, 2]
    assert "alpha" in cv.loc[1, "error"] and "fold 0" in cv.loc[1, "error"]
    with pytest.raises(S.SearchTaskError, match=r"candidate 1 .*alpha.*fold 0"):
        S.search_local(regression, spec_for(param_grid={"alpha": [1.0, -5.0]}, cv=3, failure_policy="raise"))


def test_duplicate_task_rows_from_retries_count_once(regression):
    spec = spec_for(cv=3)
    tasks, cv = S.search_local(regression, spec)
    again = S.aggregate(pd.concat([tasks, tasks.iloc[:4]], ignore_index=True), spec)
    np.testing.assert_array_equal(again["mean_test_score"].to_numpy(), cv["mean_test_score"].to_numpy())


def test_first_phase_gives_every_bin_the_same_folds_of_every_candidate():
    spec = spec_for(param_grid={"alpha": list(range(1, 13))}, cv=3)
    phases = S.plan_phases(spec, 2)
    assert phases == [[0, 1], [2]]
    first = S.plan_tasks(spec, phases[0], 2, round_robin=True)
    per_bin = first.groupby("bin")["candidate"].apply(sorted)
    assert per_bin[0] == per_bin[1] == list(range(12))
    assert first["label"].nunique() == 2
    # the second phase is bin-packed on measured seconds: one slow candidate alone on one bin
    measured = {c: (11.0 if c == 0 else 1.0) for c in range(12)}
    second = S.plan_tasks(spec, phases[1], 2, measured)
    loads = second.groupby("bin")["cost"].sum().sort_values().tolist()
    assert loads == [11.0, 11.0]
    assert second.groupby("bin")["cost"].apply(lambda c: c.is_monotonic_decreasing).all()  # largest first
    assert S.plan_phases(spec, 3) == [[0, 1, 2]] and S.plan_phases(spec, 8) == [[0, 1, 2]]


def test_staged_dataset_is_read_once_per_process(regression, tmp_path):
    spec = spec_for(cv=3)
    path = tmp_path / "data.parquet"
    regression.to_parquet(path, index=False)
    staged = S.Staged(str(path), "fp1", len(regression), S.file_checksums(str(path)), "unit")
    before = S.LOADS["count"]
    a = S.load_dataset(staged, spec)
    b = S.load_dataset(staged, spec)
    assert a is b and S.LOADS["count"] == before + 1
    rows = list(S.run_task_batches(iter([pd.DataFrame({"task_id": [0, 4], "candidate": [0, 1], "fold": [0, 1]})]),
                                   spec=spec, staged=staged))
    assert [r["status"].iloc[0] for r in rows] == ["ok", "ok"] and S.LOADS["count"] == before + 1
    assert rows[0].columns.tolist() == [c for c, _ in S.task_columns(spec)]


def test_search_group_rows_and_refit(regression):
    spec = spec_for(cv=3, group_cols=("g",))
    train_spec = TrainSpec(group_cols=("g",), feature_cols=tuple(FEATURES), label_col="y", estimator=Ridge(),
                           holdout_fraction=0.0, min_rows=3)
    pdf = regression.assign(g=7).sample(frac=1.0, random_state=0)  # shuffled arrival order
    rows = S.search_group((7,), pdf, spec=spec, train_spec=train_spec)
    cv_rows, model_rows = [r for r in rows if not r[S.REFIT_ROW]], [r for r in rows if r[S.REFIT_ROW]]
    assert len(cv_rows) == 3 and len(model_rows) == 1
    # the same as a search on the group's rows in any order
    _, cv = S.search_local(S._group_order(regression.assign(g=7), spec), spec)
    np.testing.assert_allclose([r["mean_test_score"] for r in cv_rows], cv["mean_test_score"], atol=1e-12)
    best = int(np.argmin([r["rank_test_score"] for r in cv_rows]))
    # unshuffled folds over a content-hash order are unbiased (a sort by label would give negative R-squared)
    assert cv_rows[best]["mean_test_score"] > 0.8
    model = model_rows[0]
    assert model["status"] == "ok" and model["n_train"] == len(pdf) and model["n_holdout"] == 0
    assert f'"alpha": {spec.candidates[best]["alpha"]}' in model["params"]
    frame = S.group_frame(rows, spec, ("g",))
    assert frame.columns.tolist() == [c for c, _ in S.group_result_columns(spec, [("g", "bigint")])]


def test_the_tune_command_parses_json_and_lists():
    """The tune command's options are typed by jobs/params.py (tests/unit/test_job_params.py checks the rest)."""
    from manymodels.jobs import cli

    args = cli._parser().parse_args(["tune", "--param-grid", '{"n_estimators": [5]}', "--group_cols", "store"])
    assert args.param_grid == {"n_estimators": [5]} and args.group_cols == ["store"] and args.cv == "3"


# ---------------------------------------------------------------- bad input: one test each

def test_unknown_parameter_name_lists_the_valid_ones():
    with pytest.raises(InputError, match=r"Unknown parameter\(s\) 'alpah'.*valid names are.*'alpha'.*'solver'"):
        spec_for(param_grid={"alpah": [1.0]})


@pytest.mark.parametrize("grid", [{}, [], {"alpha": []}])
def test_empty_grid_is_refused(grid):
    with pytest.raises(InputError, match="empty"):
        spec_for(param_grid=grid)


def test_more_folds_than_rows_in_a_group_names_the_group():
    sizes = pd.DataFrame({"store": [1, 2, 3], "item": [5, 6, 7], "count": [100, 4, 50]})
    with pytest.raises(InputError, match=r"store=2, item=6 \(4 rows\).*fewer rows than the 5 CV folds"):
        S.check_fold_sizes(sizes, ("store", "item"), 5)
    S.check_fold_sizes(sizes, ("store", "item"), 4)  # enough rows: no error


def test_unknown_scoring_name_lists_the_valid_ones():
    with pytest.raises(InputError, match=r"Unknown scoring name\(s\) 'r_2'.*valid scikit-learn scorer names.*r2"):
        spec_for(scoring="r_2")


def test_group_cv_without_its_column_is_refused():
    with pytest.raises(InputError, match="cv_groups_col"):
        spec_for(cv="group")
