"""Search on the shared local Spark session: equality with GridSearchCV, data read once per worker,
per-group search, the MLflow path, and (slow) notebook 03 run as a plain script."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, GroupKFold

from manymodels.core import search as S
from manymodels.errors import InputError
from manymodels.spark.search import search, search_per_group
from manymodels.tracking import log_search, log_search_per_group

pytestmark = pytest.mark.spark
ROOT = Path(__file__).resolve().parents[2]
FEATURES = [f"x{i}" for i in range(6)]
RF_GRID = {"n_estimators": [5, 15], "max_depth": [3, None], "max_features": ["sqrt", 0.8]}


@pytest.fixture(scope="module")
def classification():
    X, y = make_classification(900, 6, n_informative=4, random_state=0)
    pdf = pd.DataFrame(X, columns=FEATURES)
    pdf["y"] = y
    return pdf


@pytest.fixture(scope="module")
def rf_search(spark, classification):
    return search(spark, classification, label_col="y", estimator=RandomForestClassifier(random_state=0),
                  param_grid=RF_GRID, cv=3, scoring=["accuracy", "roc_auc"], refit="roc_auc", search_id="test-rf")


def test_global_search_equals_gridsearchcv(rf_search, classification):
    X, y = classification[FEATURES].to_numpy(), classification["y"].to_numpy()
    gs = GridSearchCV(RandomForestClassifier(random_state=0), RF_GRID, cv=3, scoring=["accuracy", "roc_auc"],
                      refit="roc_auc").fit(X, y)
    cv = rf_search.cv_results
    for key in ("accuracy", "roc_auc"):
        for col in (f"mean_test_{key}", f"std_test_{key}", f"split0_test_{key}", f"split2_test_{key}"):
            np.testing.assert_allclose(cv[col].to_numpy(), gs.cv_results_[col], rtol=0, atol=1e-9)
        assert cv[f"rank_test_{key}"].tolist() == gs.cv_results_[f"rank_test_{key}"].tolist()
    assert rf_search.best_params == gs.best_params_ and rf_search.best_index == gs.best_index_
    assert abs(rf_search.best_score - gs.best_score_) < 1e-9
    # the refit model is the best candidate fitted on all rows: the same predictions as GridSearchCV's
    np.testing.assert_array_equal(rf_search.best_estimator.predict(classification[FEATURES]),
                                  gs.best_estimator_.predict(X))


def test_each_worker_reads_the_data_once_and_tasks_fill_both_cores(rf_search):
    tasks = rf_search.tasks
    assert len(tasks) == len(rf_search.spec.candidates) * 3 and tasks["status"].eq("ok").all()
    assert tasks.groupby("worker_pid")["data_loads"].nunique().eq(1).all()  # no reload between tasks or phases
    first = tasks[tasks["fold"] < 2]  # phase 1: each partition gets one fold of every candidate
    partitions = first["task_attempt"].str.extract(r"partition=(\d+)")[0]
    assert partitions.nunique() == 2
    assert first.groupby(partitions)["candidate"].apply(sorted).map(tuple).nunique() == 1


def test_spark_dataframe_input_with_group_cv(spark, classification):
    pdf = classification.assign(site=np.arange(len(classification)) % 7)
    grid = {"alpha": [0.1, 10.0, 1000.0]}
    result = search(spark, spark.createDataFrame(pdf), label_col="y", estimator=Ridge(), param_grid=grid,
                    feature_cols=FEATURES, cv="group", n_splits=3, cv_groups_col="site", scoring="r2")
    gs = GridSearchCV(Ridge(), grid, cv=GroupKFold(3), scoring="r2").fit(pdf[FEATURES].to_numpy(),
                                                                         pdf["y"].to_numpy(), groups=pdf["site"])
    np.testing.assert_allclose(result.cv_results["mean_test_score"], gs.cv_results_["mean_test_score"], atol=1e-9)
    assert result.best_params == gs.best_params_


def test_bad_input_fails_before_any_job(spark, classification):
    with pytest.raises(InputError, match="fewer than the 5 CV folds"):
        search(spark, classification.head(3), label_col="y", estimator=Ridge(), param_grid={"alpha": [1.0]}, cv=5)
    with pytest.raises(InputError, match=r"Non-numeric feature column\(s\): 'city' is object"):
        search(spark, classification.assign(city="paris"), label_col="y", estimator=Ridge(),
               param_grid={"alpha": [1.0]})
    with pytest.raises(InputError, match=r"Missing input column\(s\) 'nope'"):
        search(spark, classification, label_col="y", estimator=Ridge(), param_grid={"alpha": [1.0]},
               feature_cols=["nope"])


def test_raise_policy_names_the_failing_task_on_the_driver(spark, classification):
    with pytest.raises(S.SearchTaskError, match=r"candidate 1 .*-5.*fold"):
        search(spark, classification, label_col="y", estimator=Ridge(), param_grid={"alpha": [1.0, -5.0]}, cv=3,
               failure_policy="raise", refit_best=False)


@pytest.fixture(scope="module")
def per_group(spark):
    """Group 0 is a clean linear signal (small alpha wins), group 1 pure noise (the largest alpha wins)."""
    frames = []
    for g, noise in ((0, 0.1), (1, None), (2, 5.0)):
        X, y = make_regression(150, 4, noise=noise or 0.0, random_state=g)
        if noise is None:
            y = np.random.default_rng(g).normal(size=len(y))
        frame = pd.DataFrame(X, columns=FEATURES[:4])
        frame["y"], frame["store"] = y, g
        frames.append(frame)
    pdf = pd.concat(frames, ignore_index=True)
    result = search_per_group(spark.createDataFrame(pdf), group_cols=["store"], label_col="y", estimator=Ridge(),
                              param_grid={"alpha": [0.001, 1.0, 1e5]}, cv=3, scoring="r2",
                              training_run_id="test-group-search")
    return pdf, result


def test_per_group_search_finds_each_groups_best_and_refits_it(spark, per_group):
    pdf, result = per_group
    best = result.best.set_index("store")
    assert best.loc[0, "best_params"] == {"alpha": 0.001} and best.loc[1, "best_params"] == {"alpha": 1e5}
    assert result.table.counts == {"ok": 3, "failed": 0, "skipped": 0}
    models = result.table.read(spark).toPandas().set_index("store")
    assert models.loc[1, "params"].count('"alpha": 100000.0') == 1 and (models["n_train"] == 150).all()
    # the Spark path equals the pure search on each group's rows
    spec = result.spec
    for g, rows in pdf.groupby("store"):
        _, cv = S.search_local(S._group_order(rows.reset_index(drop=True), spec), spec)
        got = result.cv_results[result.cv_results["store"] == g].sort_values("candidate")
        np.testing.assert_allclose(got["mean_test_score"].to_numpy(), cv["mean_test_score"].to_numpy(), atol=1e-12)


def test_per_group_search_names_a_group_with_fewer_rows_than_folds(spark):
    pdf = pd.DataFrame({"store": [1] * 20 + [2] * 2, "x0": np.arange(22.0), "y": np.arange(22.0)})
    with pytest.raises(InputError, match=r"store=2 \(2 rows\)"):
        search_per_group(spark.createDataFrame(pdf), group_cols=["store"], label_col="y", estimator=Ridge(),
                         param_grid={"alpha": [1.0]}, cv=3)


def test_per_group_search_keeps_a_nan_key(spark):
    """A NaN float key is a group of its own (null keys are refused); the model table and the best rows keep it
    NaN, as training's do (the shared packing pipeline restores it after the pandas UDF)."""
    from pyspark.sql import functions as F

    pdf = pd.DataFrame({"store": [1.5] * 12 + [-1.0] * 12, "x0": np.arange(24.0) % 7, "y": np.arange(24.0)})
    df = spark.createDataFrame(pdf).withColumn(  # pandas' NaN would arrive as null: made NaN in Spark
        "store", F.when(F.col("store") < 0, F.lit(float("nan"))).otherwise(F.col("store")))
    result = search_per_group(df, group_cols=["store"], label_col="y", estimator=Ridge(),
                              param_grid={"alpha": [1.0, 10.0]}, cv=3)
    assert result.table.counts == {"ok": 2, "failed": 0, "skipped": 0}
    stored = result.table.read(spark)
    assert stored.where(F.isnan("store")).count() == 1 and stored.where(F.col("store").isNull()).count() == 0
    assert result.best["store"].isna().sum() == 1 and len(result.best) == 2


def test_global_search_through_mlflow(rf_search, mlflow_ctx, classification):
    import mlflow
    from mlflow import MlflowClient

    logged = log_search(rf_search, mlflow_ctx, name="test_tuned", alias="champion")
    again = log_search(rf_search, mlflow_ctx, name="test_tuned", alias="champion")
    assert again.reused and (again.run_id, again.version) == (logged.run_id, logged.version)
    run = MlflowClient().get_run(logged.run_id)
    assert run.data.params["max_depth"] == str(rf_search.best_params["max_depth"])
    assert float(run.data.metrics["best_mean_test_roc_auc"]) == pytest.approx(rf_search.best_score)
    artifacts = {a.path for a in MlflowClient().list_artifacts(logged.run_id)}
    assert {"cv_results.csv", "cv_results.parquet"} <= artifacts
    model = mlflow.sklearn.load_model("models:/test_tuned@champion")
    np.testing.assert_array_equal(model.predict(classification[FEATURES].head(20)),
                                  rf_search.best_estimator.predict(classification[FEATURES].head(20)))


def test_per_group_search_through_mlflow(spark, per_group, mlflow_ctx):
    import mlflow.pyfunc
    from mlflow import MlflowClient

    pdf, result = per_group
    logged = log_search_per_group(spark, result, mlflow_ctx, name="test_tuned_groups", alias="champion")
    artifacts = {a.path for a in MlflowClient().list_artifacts(logged.run_id)}
    assert {"cv_results.csv", "best_params.csv"} <= artifacts
    scored = mlflow.pyfunc.load_model(logged.model_uri).predict(pdf.drop(columns=["y"]).head(10))
    assert (scored["status"] == "ok").all()


@pytest.mark.slow
def test_notebook_03_runs_locally(tmp_path):
    env = {**os.environ, "MANYMODELS_HOME": str(tmp_path), "PYTHONUNBUFFERED": "1", "MM_COMPARE": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, str(ROOT / "notebooks" / "03_tune_hyperparameters.py")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    out = proc.stdout
    for approach in ("MLlib CrossValidator", "driver thread pool", "manymodels search"):
        line = next(ln for ln in out.splitlines() if ln.startswith(approach))
        score = float(line.split()[len(approach.split()) + 1])
        assert 0.2 < score < 0.7, line  # CV R-squared of a random forest on diabetes
    assert "models:/manymodels_tuned@champion (version 1)" in out
