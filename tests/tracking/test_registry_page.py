"""The registry page worth browsing (MLflow 3): a training run's router carries an input example that serves, its
summary metrics sit on the logged model, the run records its input dataset, the version's description says what
was trained on what (and keeps the promotion gate's section), a worst-groups table and two figures are logged, a
classification router gives class probabilities through a params schema, and registration is deduplicated by the
MLflow run id with the tags read from the version itself (Unity Catalog's search results carry none).

Real local Spark, the session's sqlite MLflow store and real artifacts."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import Model
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from manymodels import tracking
from manymodels.core.panel import make_panel
from manymodels.core.spec import PanelSpec
from manymodels.spark.training import TrainingRunConflict, train_per_group
from manymodels.tracking import report
from manymodels.tracking.registry import logged_model_id

pytestmark = pytest.mark.spark
KEYS = ["store", "item"]
FEATURES = ["x0", "x1", "x2"]
NAME = "registry_page"


@pytest.fixture(scope="module")
def rows():
    data, _ = make_panel(PanelSpec(n_groups=12, mean_rows=40, n_features=3, seed=4242))
    first = (data["store"] == data["store"].iloc[0]) & (data["item"] == data["item"].iloc[0])
    return data.assign(y=data["y"].where(~first))  # one group with null labels only: skipped


def train(spark, data, location, run, estimator=None, label="y"):
    return train_per_group(spark.createDataFrame(data), group_cols=KEYS, feature_cols=FEATURES, label_col=label,
                           estimator=estimator or LinearRegression(), training_run_id=run, location=str(location),
                           progress=False)


def delta_folder(root: Path, version: int) -> Path:
    """A folder that looks like a Delta table at ``version`` (Delta Lake itself cannot run here: its jars come from
    Maven): what ``report.delta_version`` reads for a path."""
    log = root / "_delta_log"
    log.mkdir(parents=True)
    for v in range(version + 1):
        (log / f"{v:020d}.json").write_text("{}")
    return root


@pytest.fixture(scope="module")
def logged(spark, mlflow_ctx, rows, tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    source = str(delta_folder(root / "input_delta", 3))
    table = train(spark, rows, root / "table", "page-1")
    return table, tracking.log_training(spark, table, mlflow_ctx, name=NAME, extra_params={"source": source}), source


def version_of(logged_training):
    return MlflowClient().get_model_version(logged_training.model_name, logged_training.version)


def test_router_input_example_is_servable_and_matches_the_signature(logged):
    table, out, _ = logged
    uri = f"models:/{NAME}/{out.version}"
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    model = Model.load(str(local))
    example = model.load_input_example(str(local))
    assert list(example.columns) == KEYS + FEATURES and 1 <= len(example) <= 3
    serving_input = model.get_serving_input(str(local))
    assert serving_input == mlflow.models.convert_input_example_to_serving_input(example)
    with warnings.catch_warnings():  # deprecated in 3.13 for mlflow.models.predict(env_manager="uv"): no network here
        warnings.simplefilter("ignore")
        served = mlflow.models.validate_serving_input(uri, serving_input)
    assert served["status"].eq("ok").all() and served["prediction"].notna().all()
    assert set(map(tuple, example[KEYS].to_numpy().tolist())) <= {
        (s, i) for s, i in zip(*_ok_keys(out.run_id))}
    assert model.signature.params is None  # regression: no predict_proba


def test_a_key_mlflow_cannot_enforce_logs_the_router_without_an_example(spark, mlflow_ctx, tmp_path):
    """Regression (found by the Spark Connect property test): a date key outside pandas' nanosecond range
    (year 649) passed the serving conversion but failed MLflow's schema check of the example inside log_model, which
    failed the whole logging. The example is now left out and the router registers and scores."""
    import datetime

    data = pd.DataFrame({"when": [datetime.date(649, 5, 30)] * 12 + [datetime.date(2024, 1, 1)] * 12,
                         "x0": np.arange(24.0), "y": np.arange(24.0) * 2})
    table = train_per_group(spark.createDataFrame(data), group_cols=["when"], feature_cols=["x0"], label_col="y",
                            estimator=LinearRegression(),
                            training_run_id="old-timestamp-key", location=str(tmp_path / "t"), progress=False)
    out = tracking.log_training(spark, table, mlflow_ctx, name="registry_page_old_key", alias="champion")
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/registry_page_old_key/{out.version}"))
    assert Model.load(str(local)).saved_input_example_info is None
    scored = mlflow.pyfunc.load_model(f"models:/registry_page_old_key/{out.version}").predict(
        data.iloc[[13]].reset_index(drop=True))
    assert scored["status"].tolist() == ["ok"]


def _ok_keys(run_id):
    metrics = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="group_metrics.parquet"))
    ok = metrics[metrics["status"] == "ok"]
    return ok["store"].tolist(), ok["item"].tolist()


def test_summary_metrics_are_linked_to_the_logged_model(logged):
    _, out, _ = logged
    model_id = logged_model_id(version_of(out))
    assert model_id and model_id.startswith("m-")
    metrics = {m.key: m.value for m in mlflow.get_logged_model(model_id).metrics}
    assert metrics["groups_ok"] == 11 and metrics["groups_skipped"] == 1 and "holdout_r2_p50" in metrics
    assert MlflowClient().get_run(out.run_id).data.metrics["groups_ok"] == 11  # and still on the run


def test_the_run_records_its_input_dataset_with_the_delta_version(logged):
    table, out, source = logged
    inputs = MlflowClient().get_run(out.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert dataset.name == "input_delta" and dataset.digest == table.fingerprint[:36]
    assert dataset.source_type == "delta_table"
    assert json.loads(dataset.source) == {"path": source, "delta_table_version": 3}
    assert json.loads(dataset.schema)["mlflow_colspec"][0]["name"] == "store"
    tags = {t.key: t.value for t in inputs[0].tags}
    assert tags["mlflow.data.context"] == "training" and tags["groups"] == "12"


def test_a_parquet_source_is_recorded_as_a_spark_path_with_the_fingerprint(spark, mlflow_ctx, rows, tmp_path):
    table = train(spark, rows, tmp_path / "table", "page-parquet")
    out = tracking.log_training(spark, table, mlflow_ctx, name="registry_page_parquet",
                                source=str(tmp_path / "input.parquet"))
    dataset = MlflowClient().get_run(out.run_id).inputs.dataset_inputs[0].dataset
    assert dataset.source_type == "spark" and json.loads(dataset.source) == {"path": str(tmp_path / "input.parquet")}
    assert dataset.digest == table.fingerprint[:36]
    assert "Delta version" not in version_of(out).description


def test_version_description_says_what_was_trained_on_what(logged):
    table, out, source = logged
    text = version_of(out).description
    assert text.startswith("## Training run `page-1`") and f"MLflow run `{out.run_id}`" in text
    assert "| 11 | 0 | 1 | 12 |" in text  # ok, failed, skipped, total
    assert "| holdout_r2 |" in text and "| holdout_rmse |" in text
    assert "`LinearRegression` (sklearn)" in text
    assert f"source: `{source}` (Delta version 3)" in text and f"run fingerprint: `{table.fingerprint}`" in text
    assert "rows: " in text and "holdout_fraction" in text and len(text) <= report.MAX_TRAINING_PART


def test_a_rerun_keeps_the_promotion_gate_section_and_the_training_part(spark, mlflow_ctx, logged):
    table, out, source = logged
    client = MlflowClient()
    training = version_of(out).description
    gate = report.gate_section("quality gate PASSED: ok fraction 1.000")  # as tracking.promotion writes it
    client.update_model_version(NAME, out.version, description=report.compose_description(training, gate=gate))
    again = tracking.log_training(spark, table, mlflow_ctx, name=NAME, extra_params={"source": source})
    assert again.reused and again.version == out.version
    text = version_of(out).description
    assert text.startswith("## Training run `page-1`") and text.endswith(gate) and text.count("## Training run") == 1




def test_worst_groups_table_and_figures_are_logged_once_per_run(spark, mlflow_ctx, logged):
    table, out, source = logged
    client = MlflowClient()
    top = {a.path for a in client.list_artifacts(out.run_id)}
    figures = {a.path for a in client.list_artifacts(out.run_id, "figures")}
    assert report.WORST_TABLE in top and set(report.FIGURES) == figures
    worst = client.load_table(mlflow_ctx.experiment_id, report.WORST_TABLE, run_ids=[out.run_id])
    assert len(worst) == 11 and (worst["metric"] == "holdout_rmse").all()  # the skipped group is not ranked
    assert worst["value"].is_monotonic_decreasing and list(worst.columns[:2]) == KEYS
    tracking.log_training(spark, table, mlflow_ctx, name=NAME, extra_params={"source": source})  # a rerun
    again = client.load_table(mlflow_ctx.experiment_id, report.WORST_TABLE, run_ids=[out.run_id])
    assert len(again) == 11  # not appended again


def test_classification_router_gives_class_probabilities_through_params(spark, mlflow_ctx, rows, tmp_path):
    labelled = rows.assign(label=np.where(rows["y"] > rows["y"].median(), "hi", "lo"))
    labelled.loc[labelled["y"].isna(), "label"] = None
    estimator = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(C=0.5))])
    table = train(spark, labelled.drop(columns=["y"]), tmp_path / "table", "page-proba", estimator, label="label")
    out = tracking.log_training(spark, table, mlflow_ctx, name="registry_page_proba")
    model = mlflow.pyfunc.load_model(out.model_uri)
    assert [p.to_dict() for p in model.metadata.signature.params.params] == \
        [{"name": "predict_proba", "type": "boolean", "default": False, "shape": None}]
    batch = labelled[KEYS + FEATURES]
    plain = model.predict(batch)
    assert list(plain.columns) == KEYS + ["prediction", "status", "error"]
    proba = model.predict(batch, params={"predict_proba": True})
    assert list(proba.columns) == KEYS + ["prediction", "status", "error", "probability_hi", "probability_lo"]
    ok = proba["status"] == "ok"
    assert ok.sum() > 0 and set(proba.loc[~ok, "status"]) <= {"skipped", "failed"}  # one class only: failed
    np.testing.assert_allclose(proba.loc[ok, ["probability_hi", "probability_lo"]].sum(axis=1), 1.0)
    picked = np.where(proba.loc[ok, "probability_hi"] > 0.5, "hi", "lo")
    assert (picked == proba.loc[ok, "prediction"]).all() and proba.loc[~ok, "probability_hi"].isna().all()
    pd.testing.assert_series_equal(plain["prediction"], proba["prediction"])
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=out.model_uri))
    assert json.loads(Model.load(str(local)).get_serving_input(str(local)))["params"] == {"predict_proba": False}
    description = version_of(out).description
    assert "`steps.scale`: `StandardScaler`" in description and "C=0.5" in description


def test_registration_is_found_by_run_id_when_search_results_carry_no_tags(spark, mlflow_ctx, rows, tmp_path,
                                                                           monkeypatch):
    """Unity Catalog (which cannot run here) filters versions by name or run_id only and its search results may
    carry no tags: imitated by a client whose search_model_versions strips them (and refuses tag filters). A rerun
    still reuses its version, and a rerun on other data is still refused."""
    real = MlflowClient.search_model_versions
    searched = []

    def like_unity_catalog(self, filter_string=None, *args, **kwargs):
        if "tags." in (filter_string or ""):
            raise mlflow.exceptions.MlflowException("Unity Catalog filters model versions by name or run_id only")
        searched.append(filter_string)
        found = real(self, filter_string, *args, **kwargs)
        for version in found:
            version._tags = {}
        return found

    monkeypatch.setattr(MlflowClient, "search_model_versions", like_unity_catalog)
    table = train(spark, rows, tmp_path / "table", "page-uc")
    first = tracking.log_training(spark, table, mlflow_ctx, name="registry_page_uc")
    again = tracking.log_training(spark, table, mlflow_ctx, name="registry_page_uc")
    assert (again.run_id, again.version, again.reused) == (first.run_id, first.version, True)
    assert searched and all(s.startswith("run_id = ") for s in searched)
    assert tracking.registered_fingerprint("registry_page_uc", "page-uc", mlflow_ctx) == table.fingerprint
    newer = train(spark, rows.assign(y=rows["y"] * 2), tmp_path / "table", "page-uc")
    with pytest.raises(TrainingRunConflict, match="registry_page_uc version 1"):
        tracking.log_training(spark, newer, mlflow_ctx, name="registry_page_uc")
    by_run = tracking.group_models(first.run_id, staging=str(tmp_path / "staging"))  # a run id resolves to its
    assert by_run.version == f"registry_page_uc/{first.version}" and by_run.index_sha256  # version, tags read again
    monkeypatch.undo()
    assert len(MlflowClient().search_model_versions("name = 'registry_page_uc'")) == 1
