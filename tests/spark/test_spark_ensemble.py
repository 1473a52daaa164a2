"""Fold ensembles on Spark: the same members as the pandas path (exactly), one task per member, driver-side input
checks, tracking through tracking.log_estimator, a fresh process predicting without Spark, the CLI and notebook 04."""
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from manymodels.core.ensemble import FoldEnsembleClassifier, FoldEnsembleRegressor
from manymodels.errors import InputError
from manymodels.jobs import cli
from manymodels.studies.fold_ensemble import run_study

pytestmark = pytest.mark.spark
ROOT = Path(__file__).resolve().parents[2]
FEATURES = [f"x{i}" for i in range(6)]
RESULT_RE = (r"^RESULT n=\d+ (acc_centralized=[\d.]+ )?acc_mean=[\d.]+ acc_median=[\d.]+ acc_max=[\d.]+ "
             r"acc_stacking=[\d.]+ wall_members_s=[\d.]+( wall_centralized_s=[\d.]+)?$")
COMPARED_RE = (r"^RESULT n=\d+ acc_centralized=[\d.]+ acc_mean=[\d.]+ acc_median=[\d.]+ acc_max=[\d.]+ "
               r"acc_stacking=[\d.]+ wall_members_s=[\d.]+ wall_centralized_s=[\d.]+$")  # with compare on


@pytest.fixture(scope="module")
def frames(spark):
    X, y = make_classification(n_samples=2400, n_features=6, n_informative=4, random_state=5)
    pdf = pd.DataFrame(X, columns=FEATURES).assign(label=y)
    return pdf, spark.createDataFrame(pdf)


@pytest.mark.parametrize("sampling, combine, estimator", [
    ("disjoint", "stacking", DecisionTreeClassifier(max_depth=5)),
    ("complement", "median", HistGradientBoostingClassifier(max_iter=15)),
])
def test_spark_ensemble_predicts_exactly_like_the_pandas_one(frames, sampling, combine, estimator):
    pdf, sdf = frames
    make = lambda: FoldEnsembleClassifier(estimator, n_members=3, sampling=sampling, combine=combine, seed=7)  # noqa: E731
    on_spark = make().fit(sdf, "label")
    local = make().fit(pdf[FEATURES], pdf["label"])
    assert on_spark.fit_info_["backend"] == "spark" and local.fit_info_["backend"] == "local"
    np.testing.assert_array_equal(on_spark.predict_proba(pdf[FEATURES]), local.predict_proba(pdf[FEATURES]))
    np.testing.assert_array_equal(on_spark.member_n_rows_, local.member_n_rows_)
    np.testing.assert_allclose(on_spark.member_scores_, local.member_scores_, rtol=1e-12)
    assert list(on_spark.feature_names_in_) == FEATURES and on_spark.n_features_in_ == 6
    # One Spark task per member, each on its own partition:
    attempts = on_spark.fit_info_["task_attempts"]
    assert len(attempts) == 3 and len({re.search(r"partition=(\d+)", a).group(1) for a in attempts}) == 3
    assert all(re.fullmatch(r"[0-9a-f]{64}", s) for s in on_spark.member_sha256_)


def test_spark_regressor_equals_pandas_and_feature_cols_select_columns(spark):
    X, y = make_regression(n_samples=1500, n_features=4, noise=4, random_state=2)
    pdf = pd.DataFrame(X, columns=["a", "b", "c", "d"]).assign(target=y, ignored="text")
    make = lambda: FoldEnsembleRegressor(DecisionTreeRegressor(max_depth=6), n_members=4, combine="stacking")  # noqa: E731
    on_spark = make().fit(spark.createDataFrame(pdf), label_col="target", feature_cols=["a", "b", "c", "d"])
    local = make().fit(pdf[["a", "b", "c", "d"]], pdf["target"])
    np.testing.assert_array_equal(on_spark.predict(pdf[["a", "b", "c", "d"]]), local.predict(pdf[["a", "b", "c", "d"]]))
    assert (on_spark.member_scores_ > 0.5).all()


def test_pickled_spark_ensemble_predicts_in_a_fresh_process_without_spark(frames, tmp_path):
    pdf, sdf = frames
    model = FoldEnsembleClassifier(DecisionTreeClassifier(max_depth=4), n_members=3).fit(sdf, "label")
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    pdf[FEATURES].head(50).to_parquet(tmp_path / "rows.parquet")
    code = ("import pickle, sys, pandas as pd; m = pickle.load(open('model.pkl', 'rb')); "
            "print(','.join(map(str, m.predict(pd.read_parquet('rows.parquet'))))); "
            "assert 'pyspark' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ",".join(map(str, model.predict(pdf[FEATURES].head(50))))


@pytest.mark.parametrize("kwargs, words", [
    ({"label_col": "nope"}, "label_col='nope' is not a column"),
    ({"label_col": None}, "pass the label column's name"),
    ({"label_col": "label", "feature_cols": ["x0", "missing"]}, "column(s) 'missing' not in the input"),
    ({"label_col": "label", "feature_cols": ["x0", "name"]}, "Non-numeric feature column(s): 'name' is string"),
])
def test_bad_spark_input_fails_on_the_driver_naming_the_column(spark, frames, kwargs, words):
    pdf, _ = frames
    df = spark.createDataFrame(pdf.head(50).assign(name="a"))
    with pytest.raises(InputError, match=re.escape(words)):
        FoldEnsembleClassifier(n_members=3).fit(df, kwargs.pop("label_col"), **kwargs)


def test_null_labels_and_continuous_targets_are_refused(spark, frames):
    pdf, _ = frames
    with_nulls = spark.createDataFrame(pdf.head(100).assign(label=pdf["label"].head(100).where(pdf.index[:100] > 2)))
    with pytest.raises(InputError, match=r"3 of 100 row\(s\) have a null label in column 'label'"):
        FoldEnsembleClassifier(n_members=3).fit(with_nulls, "label")
    continuous = spark.createDataFrame(pdf.head(100).assign(label=np.linspace(0, 1, 100)))
    with pytest.raises(InputError, match="does not hold class labels"):
        FoldEnsembleClassifier(n_members=3).fit(continuous, "label")
    with pytest.raises(InputError, match="sampling='bags'"):
        FoldEnsembleClassifier(sampling="bags").fit(continuous, "label")


@pytest.fixture(scope="module")
def study(spark, mlflow_ctx, tmp_path_factory):
    return run_study(spark, n_samples="3000", n_members="3", sampling="disjoint", combine="stacking",
                     learner="sklearn.tree.DecisionTreeClassifier", model_name="fold_ensemble_tests",
                     alias="champion", experiment=mlflow_ctx.experiment_name, out_dir=tmp_path_factory.mktemp("s"),
                     compare="true")


def test_study_logs_members_scores_times_rule_and_registers_with_alias(study):
    logged = study.logged
    run = MlflowClient().get_run(logged.run_id)
    for k in range(3):
        assert run.data.metrics[f"member_{k}_validation_accuracy"] == pytest.approx(study.ensemble.member_scores_[k])
        assert run.data.metrics[f"member_{k}_fit_seconds"] == pytest.approx(study.ensemble.member_fit_seconds_[k])
    assert run.data.params["combine"] == "stacking" and run.data.params["n_members"] == "3"
    artifacts = {a.path for a in MlflowClient().list_artifacts(logged.run_id)}
    assert {"members.csv", "members.parquet", "methods.csv", study.kde_png.name} <= artifacts
    version = MlflowClient().get_model_version_by_alias("fold_ensemble_tests", "champion")
    assert str(version.version) == logged.version
    X_test = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 20)), columns=[f"x{i}" for i in range(20)])
    loaded = mlflow.pyfunc.load_model(logged.model_uri)
    assert loaded.metadata.signature.inputs.input_names() == list(X_test.columns)
    np.testing.assert_array_equal(np.asarray(loaded.predict(X_test)), study.ensemble.predict(X_test))


def test_study_table_and_result_line(study):
    table = study.table
    assert len(table) == 8 and table["published_accuracy"].tolist()[1] == "0.9045"
    assert study.ensemble.combine == "stacking" and study.ensemble.meta_ is not None
    assert re.fullmatch(COMPARED_RE, study.result_line)
    assert all(0.6 < study.accuracy[k] <= 1 for k in ("centralized_folds", "mean", "median", "max", "stacking"))
    assert study.kde_png.stat().st_size > 10_000 and study.kde_png.read_bytes()[:4] == b"\x89PNG"


def test_cli_ensemble_runs_the_notebook_code(spark, mlflow_ctx, capsys):
    assert cli.main(["ensemble", "--n_samples", "2000", "--n_members", "2", "--combine", "median",
                     "--learner", "sklearn.tree.DecisionTreeClassifier", "--model_name", "fold_ensemble_cli",
                     "--experiment", mlflow_ctx.experiment_name]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(RESULT_RE, out[-1]) and out[-1].startswith("RESULT n=2000 ")
    assert "centralized" not in out[-1]  # compare is off by default: no baselines on the driver
    assert any("models:/fold_ensemble_cli@champion" in line for line in out)


@pytest.fixture(scope="module")
def labelled_input(tmp_path_factory):
    """A Parquet folder with a binary string label, a non-numeric column and a column left out of feature_cols."""
    X, y = make_classification(n_samples=3000, n_features=6, n_informative=4, random_state=9)
    pdf = pd.DataFrame(X, columns=FEATURES).assign(y=np.where(y == 1, "yes", "no"), name="a", extra=1.0)
    path = tmp_path_factory.mktemp("ens_input") / "rows"
    pdf.to_parquet(path.with_suffix(".tmp"))
    path.mkdir()
    path.with_suffix(".tmp").rename(path / "part-0.parquet")
    return str(path), pdf


def test_study_on_an_input_trains_on_spark_and_brings_bounded_samples_to_the_driver(
        spark, mlflow_ctx, labelled_input, tmp_path, monkeypatch):
    from manymodels.studies import fold_ensemble

    monkeypatch.setattr(fold_ensemble, "TEST_MAX_ROWS", 250)
    monkeypatch.setattr(fold_ensemble, "COMPARE_MAX_ROWS", 400)
    path, pdf = labelled_input
    result = run_study(spark, input_path=path, feature_cols=",".join(FEATURES[:5]), label_col="y", n_members="3",
                       combine="mean", learner="sklearn.tree.DecisionTreeClassifier", model_name="ens_on_input",
                       catalog="cat", schema="sch", experiment=mlflow_ctx.experiment_name, compare="true",
                       out_dir=tmp_path)
    ensemble = result.ensemble
    assert list(ensemble.feature_names_in_) == FEATURES[:5] and list(ensemble.classes_) == ["no", "yes"]
    trained = int(sum(ensemble.member_n_rows_))  # the 70% split, hashed on Spark: none of it collected
    assert 0.6 * len(pdf) < trained < 0.8 * len(pdf)
    assert "first 250 of the 30% split" in result.data_note and "first 400 training rows" in result.data_note
    central = result.table[result.table["method"].str.startswith("centralized")]
    assert len(central) == 2 and central["note"].str.contains("first 400 training rows").all()
    assert (result.table["published_accuracy"] == "").all()  # the published figures are of the generated data
    assert all(0.6 < result.accuracy[k] <= 1 for k in ("centralized_one", "members", "mean", "stacking"))
    assert re.fullmatch(COMPARED_RE, result.result_line) and result.result_line.startswith(f"RESULT n={trained + 250} ")
    assert result.logged.model_uri == "models:/cat.sch.ens_on_input@champion"
    rows = pdf[FEATURES[:5]].head(20)
    np.testing.assert_array_equal(mlflow.pyfunc.load_model(result.logged.model_uri).predict(rows),
                                  ensemble.predict(rows))


def test_study_without_compare_has_only_the_spark_rows_and_still_registers(spark, mlflow_ctx, labelled_input,
                                                                            tmp_path):
    path, _ = labelled_input
    result = run_study(spark, input_path=path, label_col="y", n_members="2",
                       learner="sklearn.tree.DecisionTreeClassifier", model_name="ens_no_compare",
                       experiment=mlflow_ctx.experiment_name, out_dir=tmp_path)
    assert result.table["method"].str.startswith(("2 members", "ensemble:")).all() and len(result.table) == 5
    assert "centralized" not in result.result_line and "centralized_one" not in result.accuracy
    # feature_cols empty: every numeric column but the label (the string column 'name' is left out)
    assert list(result.ensemble.feature_names_in_) == [*FEATURES, "extra"]
    assert result.logged.model_uri == "models:/ens_no_compare@champion" and result.kde_png.exists()


@pytest.mark.parametrize("kwargs, words", [
    ({"label_col": "nope"}, "label_col='nope' is not a column"),
    ({"label_col": "x0"}, "needs a binary label"),
    ({"label_col": "y", "feature_cols": "x0,missing"}, "'missing' not in"),
])
def test_study_input_errors_name_the_column(spark, labelled_input, kwargs, words):
    with pytest.raises(InputError, match=re.escape(words)):
        run_study(spark, input_path=labelled_input[0], log=False, **kwargs)


@pytest.mark.slow
def test_notebook_04_runs_locally_with_small_n(tmp_path):
    env = {**os.environ, "MANYMODELS_HOME": str(tmp_path), "PYTHONUNBUFFERED": "1", "MM_N_SAMPLES": "4000",
           "MM_N_MEMBERS": "3", "MM_COMBINE": "stacking"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, str(ROOT / "notebooks" / "04_fold_ensemble.py")], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    lines = proc.stdout.splitlines()
    assert any(re.fullmatch(RESULT_RE, line) and line.startswith("RESULT n=4000 ") for line in lines)
    assert "registered models:/manymodels_fold_ensemble@champion (version 1)" in proc.stdout
    assert len(list((tmp_path / "fold_ensemble").glob("*.png"))) == 1
