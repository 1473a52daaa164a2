"""MLflow from the driver: real sqlite tracking + registry + artifacts, and the router in a fresh process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LinearRegression

from manymodels import tracking
from manymodels.core import model_bytes
from manymodels.spark.training import train_per_group

pytestmark = pytest.mark.spark
FEATURES = ["x0", "x1", "x2"]
NAME = "router_tests"


@pytest.fixture(scope="module")
def trained(spark, mlflow_ctx, small_panel, tmp_path_factory):
    _, rows, _ = small_panel
    skip_key = rows[["store", "item"]].iloc[0]
    mask = (rows["store"] == skip_key["store"]) & (rows["item"] == skip_key["item"])
    df = spark.createDataFrame(rows.assign(y=rows["y"].where(~mask)))
    table = train_per_group(df, group_cols=["store", "item"], feature_cols=FEATURES, label_col="y",
                            estimator=LinearRegression(), training_run_id="track-1",
                            location=str(tmp_path_factory.mktemp("t") / "table"))
    logged = tracking.log_training(spark, table, mlflow_ctx, name=NAME)
    return table, logged, rows


def artifact_files(run_id, path="models"):
    root = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path))
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.pkl"))


def test_run_has_params_summary_metrics_and_artifacts(trained):
    table, logged, _ = trained
    run = MlflowClient().get_run(logged.run_id)
    assert run.data.tags[tracking.RUN_TAG] == "track-1"
    assert run.data.params["estimator"] == "LinearRegression" and run.data.params["group_cols"] == "store,item"
    assert run.data.metrics["groups_ok"] == 39 and run.data.metrics["groups_skipped"] == 1
    assert 0.5 < run.data.metrics["holdout_r2_p50"] <= 1
    files = artifact_files(logged.run_id)
    assert len(files) == 39 and files[0] == "store=0/item=1.pkl"  # store=0/item=0 was skipped
    top = {a.path for a in MlflowClient().list_artifacts(logged.run_id)}
    assert {"models", "group_metrics.parquet", "group_metrics.csv", "metric_histogram.png"} <= top
    metrics = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=logged.run_id,
                                                                  artifact_path="group_metrics.parquet"))
    assert len(metrics) == 40 and "model" not in metrics.columns


def test_registered_router_with_alias(trained):
    _, logged, _ = trained
    client = MlflowClient()
    version = client.get_model_version_by_alias(NAME, "champion")
    assert str(version.version) == logged.version and version.tags[tracking.RUN_TAG] == "track-1"


def test_logging_the_same_training_run_again_replaces_instead_of_duplicating(spark, mlflow_ctx, trained):
    table, logged, _ = trained
    again = tracking.log_training(spark, table, mlflow_ctx, name=NAME)
    assert again.run_id == logged.run_id and again.version == logged.version and again.reused
    runs = mlflow.search_runs([mlflow_ctx.experiment_id], filter_string=f"tags.`{tracking.RUN_TAG}` = 'track-1'",
                              output_format="list")
    assert len(runs) == 1
    assert len(MlflowClient().search_model_versions(f"name = '{NAME}'")) == 1
    assert len(artifact_files(logged.run_id)) == 39


def test_router_scores_in_a_fresh_process_and_reports_unknown_groups(trained, mlflow_ctx, spark):
    table, logged, rows = trained
    batch = rows.groupby(["store", "item"]).head(2).drop(columns=["y"]).reset_index(drop=True)
    batch = pd.concat([batch, batch.head(1).assign(store=999)], ignore_index=True)
    inp = Path(os.environ["MANYMODELS_HOME"]) / "router_input.parquet"
    batch.to_parquet(inp)
    code = (
        "import json, sys, mlflow.pyfunc, pandas as pd\n"
        f"m = mlflow.pyfunc.load_model('{logged.model_uri}')\n"
        f"out = m.predict(pd.read_parquet('{inp}'))\n"
        "print('RESULT ' + out.to_json(orient='records'))\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_ctx.tracking_uri}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = pd.DataFrame(json.loads(proc.stdout.split("RESULT ", 1)[1]))
    assert len(out) == len(batch)
    assert out["status"].iloc[-1] == "unknown_group" and "store=999" in out["error"].iloc[-1]
    assert (out["status"] == "skipped").sum() == 2  # the group trained with null labels only
    models = {(r.store, r.item): model_bytes.loads(r.model, r.model_sha256)
              for r in table.read(spark).where("status = 'ok'").toPandas().itertuples()}
    ok = out["status"] == "ok"
    expected = [models[(s, i)].predict(batch.loc[[n], FEATURES].to_numpy())[0]
                for n, (s, i) in enumerate(zip(batch["store"], batch["item"])) if ok[n]]
    np.testing.assert_allclose(out.loc[ok, "prediction"], expected, rtol=1e-9)


def test_new_training_run_gets_a_new_version_and_moves_the_alias(spark, mlflow_ctx, trained, small_panel, tmp_path):
    _, first, rows = trained
    table = train_per_group(spark.createDataFrame(rows), group_cols=["store", "item"], feature_cols=FEATURES,
                            label_col="y", estimator=LinearRegression(), training_run_id="track-2",
                            location=str(tmp_path / "table"))
    second = tracking.log_training(spark, table, mlflow_ctx, name=NAME)
    assert second.run_id != first.run_id and int(second.version) == int(first.version) + 1
    assert str(MlflowClient().get_model_version_by_alias(NAME, "champion").version) == second.version


def test_log_estimator_is_idempotent_per_run_key(mlflow_ctx):
    X = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) ** 2})
    model = LinearRegression().fit(X, 3 * X["a"] + 1)
    first = tracking.log_estimator(model, mlflow_ctx, run_key="single-1", name="single_tests", input_example=X,
                                   params={"rule": "mean"}, metrics={"score": 0.5},
                                   tables={"members": pd.DataFrame({"member": [0, 1]})})
    again = tracking.log_estimator(model, mlflow_ctx, run_key="single-1", name="single_tests", input_example=X)
    assert (again.run_id, again.version, again.reused) == (first.run_id, first.version, True)
    run = MlflowClient().get_run(first.run_id)
    assert run.data.params["rule"] == "mean" and run.data.metrics["score"] == 0.5
    assert {"members.parquet", "members.csv"} <= {a.path for a in MlflowClient().list_artifacts(first.run_id)}
    loaded = mlflow.pyfunc.load_model(first.model_uri)
    assert loaded.metadata.signature.inputs.input_names() == ["a", "b"]
    np.testing.assert_allclose(loaded.predict(X.head(3)), model.predict(X.head(3)))
