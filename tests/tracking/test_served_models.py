"""Never serve the wrong model: a training run id names one set of models, and what a registered version serves is
decided by its own index, not by the table or file that holds the blobs.

Real local Spark, the session's sqlite MLflow store and real artifacts. Tampering is done as someone who can
write a model table, a ``models.parquet`` or a staged copy would do it: the blob and its recorded checksum are
changed together (and the format and the load policy too), which a checksum stored next to its blob cannot see.
"""
from __future__ import annotations

import pickle
import re
import threading
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LinearRegression

from manymodels import tracking
from manymodels.api import score_per_group
from manymodels.core import model_bytes
from manymodels.core.model_bytes import ModelIntegrityError, UntrustedModelError, sha256
from manymodels.core.model_cache import MODEL_CACHE
from manymodels.core.panel import make_panel
from manymodels.core.routing import REFUSED
from manymodels.core.spec import PanelSpec
from manymodels.spark.training import TrainingRunConflict, train_per_group
from manymodels.storage import model_table
from manymodels.storage.model_index import INDEX_FILE, POLICY_KEY
from manymodels.storage.packed_store import MODELS_FILE
from manymodels.tracking.filters import FilterValueError

pytestmark = pytest.mark.spark
KEYS = ["store", "item"]
FEATURES = ["x0", "x1", "x2"]


@pytest.fixture(scope="module")
def rows():
    data, _ = make_panel(PanelSpec(n_groups=8, mean_rows=30, n_features=3, seed=5151))
    return data


def train(spark, data, location, run, **settings):
    return train_per_group(spark.createDataFrame(data), group_cols=KEYS, feature_cols=FEATURES, label_col="y",
                           estimator=LinearRegression(), training_run_id=run, location=str(location), progress=False,
                           **settings)


def score(spark, data, model, staging):
    """Scores in the input's row order."""
    MODEL_CACHE.clear()
    frame = data.drop(columns=["y"]).assign(row_id=np.arange(len(data)))
    out = score_per_group(spark.createDataFrame(frame), model, passthrough_cols=["row_id"],
                          staging_dir=str(staging)).toPandas()
    return out.sort_values("row_id", ignore_index=True)


def evil_blob(value: float = 1e6) -> bytes:
    """A different, valid model: predicts ``value`` everywhere."""
    model = LinearRegression().fit(np.zeros((2, 3)), [value, value])
    return pickle.dumps(model, protocol=5)


def swap(path: Path, key, change_key) -> None:
    """Rewrite one group's row of a Parquet file or folder with ``change_key(frame, mask)`` (metadata kept)."""
    for f in [path] if path.is_file() else sorted(path.glob("*.parquet")):
        table = pq.read_table(f)
        frame = table.to_pandas()
        if "key" in frame:
            mask = frame["key"].map(lambda k: tuple(k) == tuple(str(v) for v in key))
        else:
            mask = (frame["store"] == key[0]) & (frame["item"] == key[1])
        if mask.any():
            change_key(frame, mask)
            new = pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False)
            pq.write_table(new.replace_schema_metadata(table.schema.metadata), f)


def blob_and_checksum(frame, mask):
    """The edit a checksum in the same row cannot see: a new blob and its own SHA-256."""
    blob = evil_blob()
    frame.loc[mask, "model"] = pd.Series([blob] * int(mask.sum()), index=frame.index[mask], dtype=object)
    frame.loc[mask, "model_sha256"] = sha256(blob)


def registry_store(name: str, version: str) -> Path:
    """The folder of a registered router's packed store in the local artifact store (not a downloaded copy)."""
    client = MlflowClient()
    source = client.get_model_version(name, version).source
    location = client.get_logged_model(source.removeprefix("models:/").split("/")[0]).artifact_location
    return next(Path(location.removeprefix("file://")).rglob(MODELS_FILE)).parent


def refused_rows(out: pd.DataFrame, key) -> pd.DataFrame:
    hit = (out["store"] == key[0]) & (out["item"] == key[1])
    assert hit.any()
    return out[hit]


# ---------------------------------------------------------------- reruns

def test_same_run_id_on_new_data_is_refused_before_anything_is_logged(spark, rows, tmp_path, mlflow_ctx):
    location = tmp_path / "table"
    first = train(spark, rows, location, "rerun-new-data", commit=False)
    logged = tracking.log_training(spark, first, mlflow_ctx, name="rerun_model")
    again = train(spark, rows, location, "rerun-new-data", commit=False)  # a crash rerun: same data, same spec
    reused = tracking.log_training(spark, again, mlflow_ctx, name="rerun_model")
    assert (reused.version, reused.reused, reused.run_id) == (logged.version, True, logged.run_id)

    changed = rows.assign(y=rows["y"] * 3)
    newer = train(spark, changed, location, "rerun-new-data", commit=False)
    assert newer.fingerprint != first.fingerprint
    params = MlflowClient().get_run(logged.run_id).data.params
    with pytest.raises(TrainingRunConflict, match=r"training_run_id 'rerun-new-data' is already recorded as "
                                                  r"rerun_model version 1 with other models.*Fix: pass a new"):
        tracking.log_training(spark, newer, mlflow_ctx, name="rerun_model", extra_params={"source": "elsewhere"})
    client = MlflowClient()
    assert [str(v.version) for v in client.search_model_versions("name = 'rerun_model'")] == [logged.version]
    assert str(client.get_model_version_by_alias("rerun_model", "champion").version) == logged.version
    assert client.get_run(logged.run_id).data.params == params  # nothing logged
    assert model_table.current(str(location))["version"] == again.version  # the new table never became current

    # what is served is what the first run trained, not the refused run's models
    out = mlflow.pyfunc.load_model(logged.model_uri).predict(rows[KEYS + FEATURES])
    assert out["status"].eq("ok").all()
    np.testing.assert_allclose(out["prediction"], score(spark, rows, first, tmp_path / "s")["prediction"], rtol=1e-9)
    assert not np.allclose(out["prediction"], score(spark, rows, newer, tmp_path / "s")["prediction"])


def test_a_run_id_whose_logging_crashed_before_registration_is_refused_on_new_data(spark, rows, tmp_path,
                                                                                     mlflow_ctx, monkeypatch):
    """Killed while uploading (nothing registered, the MLflow run holds the first attempt's fingerprint): a rerun
    on other data is refused before anything is logged; on the same data it completes in the same run."""
    location = tmp_path / "table"
    first = train(spark, rows, location, "rerun-after-logging-crash", commit=False)

    def upload_fails(*args, **kwargs):
        raise ConnectionError("artifact store unreachable")

    monkeypatch.setattr(mlflow, "log_artifacts", upload_fails)
    with pytest.raises(ConnectionError):
        tracking.log_training(spark, first, mlflow_ctx, name="logging_crash")
    monkeypatch.undo()
    crashed = tracking.run_of(mlflow_ctx, "rerun-after-logging-crash")
    assert crashed is not None and not tracking.is_registered(MlflowClient(), "logging_crash")

    other = train(spark, rows.assign(y=-rows["y"]), location, "rerun-after-logging-crash", commit=False)
    with pytest.raises(TrainingRunConflict, match=f"MLflow run {crashed.info.run_id}, not registered"):
        tracking.log_training(spark, other, mlflow_ctx, name="logging_crash")
    assert not tracking.is_registered(MlflowClient(), "logging_crash")
    assert tracking.registered_fingerprint("logging_crash", "rerun-after-logging-crash", mlflow_ctx) == \
        first.fingerprint  # what jobs.train_and_register passes to train_per_group before training

    again = train(spark, rows, location, "rerun-after-logging-crash", commit=False)
    logged = tracking.log_training(spark, again, mlflow_ctx, name="logging_crash")
    assert logged.run_id == crashed.info.run_id and not logged.reused and logged.version == "1"


def test_train_per_group_refuses_a_registered_run_id_on_new_data_before_the_training_job(spark, rows, tmp_path):
    first = train(spark, rows, tmp_path / "t", "rerun-early", commit=False)
    with pytest.raises(TrainingRunConflict, match="rerun-early"):
        train(spark, rows.assign(y=rows["y"] + 1), tmp_path / "t", "rerun-early", commit=False,
              expect_fingerprint=first.fingerprint)
    assert len(model_table.versions(str(tmp_path / "t"))) == 1  # nothing written
    same = train(spark, rows, tmp_path / "t", "rerun-early", commit=False, expect_fingerprint=first.fingerprint)
    assert same.fingerprint == first.fingerprint


def test_the_alias_follows_the_location_when_two_runs_commit_in_either_order(spark, rows, tmp_path, mlflow_ctx):
    """Two runs on ONE location, interleaved as commit A, commit B, alias B, alias A: today's order of alias
    writes would leave the table on B and the alias on A. B runs in a thread while A is between its commit and
    its alias write."""
    location = tmp_path / "shared"
    a = train(spark, rows, location, "one-location-a", commit=False)
    b = train(spark, rows.assign(y=rows["y"] * 2), location, "one-location-b", commit=False)
    done = {}
    real_commit = type(a).commit

    def commit_then_let_b_run(self, spark=None, *, registered=None):
        real_commit(self, spark, registered=registered)
        if self is a:
            worker = threading.Thread(target=lambda: done.update(
                b=tracking.log_training(spark, b, mlflow_ctx, name="one_location")))
            worker.start()
            worker.join()

    type(a).commit = commit_then_let_b_run
    try:
        logged_a = tracking.log_training(spark, a, mlflow_ctx, name="one_location")
    finally:
        type(a).commit = real_commit
    logged_b = done["b"]
    pointer = model_table.current(str(location))
    alias = MlflowClient().get_model_version_by_alias("one_location", "champion")
    assert (pointer["training_run_id"] == "one-location-b"
            and pointer["registered"] == f"one_location/{logged_b.version}")
    assert str(alias.version) == logged_b.version and alias.tags[tracking.RUN_TAG] == "one-location-b"
    assert logged_a.alias_version == logged_b.version  # A saw that B committed after it


# ---------------------------------------------------------------- one authority: the index

@pytest.fixture(scope="module")
def registered(spark, rows, tmp_path_factory, mlflow_ctx):
    """A version whose models no Python worker has loaded (new data; the expected predictions come from the router
    in this process): a worker's cache would serve a registered model, rightly, without reading an edited copy."""
    tmp = tmp_path_factory.mktemp("served")
    table = train(spark, rows.assign(y=rows["y"] * 1.37), tmp / "table", "served-index", commit=False)
    logged = tracking.log_training(spark, table, mlflow_ctx, name="served_index")
    MODEL_CACHE.clear()
    return table, logged, mlflow.pyfunc.load_model(logged.model_uri).predict(rows[KEYS + FEATURES])


def test_a_model_table_edited_blob_and_checksum_together_is_refused_for_scoring_and_for_logging(spark, rows,
                                                                                                 tmp_path, mlflow_ctx):
    table = train(spark, rows, tmp_path / "table", "edited-table", commit=False)
    victim = tuple(rows[KEYS].iloc[0])
    swap(Path(table.version), victim, blob_and_checksum)
    out = score(spark, rows, table, tmp_path / "staging")
    bad = refused_rows(out, victim)
    assert bad["status"].eq(REFUSED).all() and bad["prediction"].isna().all()
    assert (f"group store={victim[0]}, item={victim[1]} of training run edited-table" in bad["error"].iloc[0]
            and "ModelIntegrityError" in bad["error"].iloc[0])
    assert out.loc[~out.index.isin(bad.index), "status"].eq("ok").all()
    with pytest.raises(ModelIntegrityError, match=f"Refusing to log group store={victim[0]}, item={victim[1]} of "
                                                  "training run edited-table"):
        tracking.log_training(spark, table, mlflow_ctx, name="edited_table")
    assert not tracking.is_registered(MlflowClient(), "edited_table")


def test_registered_packed_models_edited_with_their_checksums_are_refused_by_every_load_path(
        spark, rows, tmp_path, registered):
    table, logged, clean = registered
    victim = tuple(rows[KEYS].iloc[1])
    store = registry_store(logged.model_name, logged.version)
    saved = (store / MODELS_FILE).read_bytes()
    try:
        swap(store / MODELS_FILE, victim, blob_and_checksum)
        MODEL_CACHE.clear()
        out = mlflow.pyfunc.load_model(logged.model_uri).predict(rows[KEYS + FEATURES])  # the router pyfunc
        assert refused_rows(out, victim)["status"].eq(REFUSED).all()
        assert "ModelIntegrityError" in refused_rows(out, victim)["error"].iloc[0]
        ok = (out["status"] == "ok").to_numpy()
        assert ok.sum() == len(out) - len(refused_rows(out, victim))
        np.testing.assert_allclose(out.loc[ok, "prediction"], clean.loc[ok, "prediction"], rtol=1e-12)
        with pytest.raises(ModelIntegrityError, match=f"served_index/{logged.version}"):  # staging checks the copy
            tracking.group_models(logged.model_uri, str(tmp_path / "fresh"))
        # spark_udf: MLflow copies the version to the workers, whose router reads the same index
        udf = mlflow.pyfunc.spark_udf(spark, logged.model_uri, result_type="prediction double, status string, "
                                                                          "error string")
        got = (spark.createDataFrame(rows[KEYS + FEATURES]).select(*KEYS, udf(*KEYS, *FEATURES).alias("out"))
               .select(*KEYS, "out.*").toPandas())
        assert refused_rows(got, victim)["status"].eq(REFUSED).all()
        assert got.loc[~got.index.isin(refused_rows(got, victim).index), "status"].eq("ok").all()
    finally:
        (store / MODELS_FILE).write_bytes(saved)


def test_a_staged_copy_edited_with_checksum_format_and_policy_is_refused_per_group(spark, rows, tmp_path, mlflow_ctx):
    # models no Python worker has loaded yet (a worker's cache would serve the registered model, rightly, without
    # reading the edited copy): new data; the expected predictions come from the router in this process
    rows = rows.assign(y=rows["y"] * 7.25)
    table = train(spark, rows, tmp_path / "t", "staged-edit", commit=False)
    logged = tracking.log_training(spark, table, mlflow_ctx, name="staged_edit")
    MODEL_CACHE.clear()
    clean = mlflow.pyfunc.load_model(logged.model_uri).predict(rows[KEYS + FEATURES])
    staging = tmp_path / "staging"
    models = tracking.group_models(logged.model_uri, str(staging))
    victim = tuple(rows[KEYS].iloc[2])
    path = Path(models.store) / MODELS_FILE

    def everything(frame, mask):
        blob_and_checksum(frame, mask)
        frame.loc[mask, "model_format"] = "pickle5"

    swap(path, victim, everything)
    table_pq = pq.read_table(path)  # and the policy in the file's metadata, for good measure
    pq.write_table(table_pq.replace_schema_metadata({POLICY_KEY: b'{"model_format": "pickle5"}'}), path)
    out = score(spark, rows, models, staging)
    bad = refused_rows(out, victim)
    assert bad["status"].eq(REFUSED).all()
    assert f"group store={victim[0]}, item={victim[1]} of training run staged-edit (staged_edit/" \
           in bad["error"].iloc[0]
    ok = (out["status"] == "ok").to_numpy()
    assert ok.sum() == len(out) - len(bad)
    np.testing.assert_allclose(out.loc[ok, "prediction"], clean.loc[ok, "prediction"], rtol=1e-12)  # as before

    # the staged index itself edited: every row refused, naming its group and the version
    index_path = Path(models.store) / INDEX_FILE
    index = pq.read_table(index_path)
    pq.write_table(index.slice(1), index_path)
    out = score(spark, rows, models, staging)
    assert out["status"].eq(REFUSED).all()
    first = out.iloc[0]
    assert f"group store={first['store']}, item={first['item']}" in first["error"]
    assert f"the index of staged_edit/{logged.version}" in first["error"]


def test_staged_copies_are_keyed_by_content_so_a_reset_registry_never_serves_a_stale_copy(
        spark, rows, tmp_path, mlflow_ctx, monkeypatch):
    """A registry reset brings back name 'reset_model' version 1 with other models: the staged copy of the first
    version 1 must not serve the second."""
    staging = tmp_path / "staging"
    outs = []
    for i, factor in enumerate((1.0, -4.0)):
        monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)  # exported by the previous set_registry_uri
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        ctx = tracking.configure(tracking_uri=f"sqlite:///{tmp_path / f'reset{i}.db'}", experiment="reset")
        try:
            table = train(spark, rows.assign(y=rows["y"] * factor), tmp_path / f"t{i}", f"reset-{i}", commit=False)
            logged = tracking.log_training(spark, table, ctx, name="reset_model")
            assert logged.version == "1"
            outs.append(score(spark, rows, "models:/reset_model@champion", staging))
        finally:
            monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
            tracking.configure(tracking_uri=mlflow_ctx.tracking_uri, experiment=mlflow_ctx.experiment_name)
    assert not np.allclose(outs[0]["prediction"].sort_values(), outs[1]["prediction"].sort_values())
    assert outs[1]["model_version"].eq("reset_model/1").all() and outs[1]["status"].eq("ok").all()


def test_a_skops_version_cannot_be_downgraded_to_pickle_by_editing_data(spark, rows, tmp_path, mlflow_ctx):
    table = train(spark, rows, tmp_path / "t", "skops-downgrade", commit=False, model_format="skops")
    logged = tracking.log_training(spark, table, mlflow_ctx, name="skops_downgrade")
    store = registry_store(logged.model_name, logged.version)
    victim = tuple(rows[KEYS].iloc[3])

    def to_pickle(frame, mask):
        blob_and_checksum(frame, mask)
        frame.loc[mask, "model_format"] = "pickle5"

    swap(store / MODELS_FILE, victim, to_pickle)
    packed = pq.read_table(store / MODELS_FILE)
    pq.write_table(packed.replace_schema_metadata({POLICY_KEY: b'{"model_format": "pickle5"}'}), store / MODELS_FILE)
    MODEL_CACHE.clear()
    out = mlflow.pyfunc.load_model(logged.model_uri).predict(rows[KEYS + FEATURES])
    bad = refused_rows(out, victim)
    assert bad["status"].eq(REFUSED).all() and bad["prediction"].isna().all()
    assert out.loc[out["status"] != REFUSED, "status"].eq("ok").all()


def test_the_model_cache_is_keyed_by_checksum_and_format_and_checks_the_policy_on_every_hit():
    MODEL_CACHE.clear()
    blob = evil_blob(3.0)
    sha = sha256(blob)
    model = MODEL_CACHE.get(blob, sha, model_format="pickle5")
    assert (sha, "pickle5") in MODEL_CACHE and (sha, "skops") not in MODEL_CACHE
    skops_only = model_bytes.LoadPolicy("skops", model_bytes.DEFAULT_TRUSTED_TYPES)
    with pytest.raises(UntrustedModelError, match="only skops"):
        MODEL_CACHE.get(blob, sha, model_format="pickle5", policy=skops_only)  # a hit, still refused
    assert MODEL_CACHE.get(blob, sha, model_format="pickle5") is model and MODEL_CACHE.loads == 1


def test_load_for_scoring_checks_a_registered_estimator_against_its_version(tmp_path, mlflow_ctx):
    X = pd.DataFrame({"a": np.arange(10.0), "b": np.arange(10.0) ** 2})
    model = LinearRegression().fit(X, X["a"] * 2)
    logged = tracking.log_estimator(model, mlflow_ctx, run_key="estimator-index", name="estimator_index",
                                    input_example=X)
    loaded, version, _ = tracking.load_for_scoring(logged.model_uri)
    np.testing.assert_allclose(loaded.predict(X), model.predict(X))
    mv = MlflowClient().get_model_version("estimator_index", logged.version)
    location = MlflowClient().get_logged_model(mv.source.removeprefix("models:/").split("/")[0]).artifact_location
    folder = Path(location.removeprefix("file://"))
    stored = next(f for f in folder.rglob("model.*"))  # model.skops (MLflow's default) or model.pkl
    original = stored.read_bytes()
    stored.write_bytes(original[:-8] + bytes(8))
    try:
        with pytest.raises(ModelIntegrityError, match=f"model version estimator_index/{logged.version}"):
            tracking.load_for_scoring(logged.model_uri)
    finally:
        stored.write_bytes(original)
    mlmodel = next(folder.rglob("MLmodel"))
    text = mlmodel.read_text()
    fmt = mv.tags[tracking.FORMAT_TAG]
    other = "cloudpickle" if fmt != "cloudpickle" else "pickle"
    assert f"serialization_format: {fmt}" in text
    mlmodel.write_text(text.replace(f"serialization_format: {fmt}", f"serialization_format: {other}"))
    try:  # a skops version relabelled as a pickle is not unpickled
        with pytest.raises(UntrustedModelError, match=f"registered as '{fmt}'"):
            tracking.load_for_scoring(logged.model_uri)
    finally:
        mlmodel.write_text(text)


# ---------------------------------------------------------------- table-name locations

def test_a_table_name_location_becomes_current_only_after_registration(spark, rows, tmp_path, mlflow_ctx,
                                                                        monkeypatch):
    """Parquet catalog tables stand in for Delta here (``model_table.table_format``); the code path is the same."""
    location = "default.served_models_location"
    first = train(spark, rows, location, "table-location-1", commit=False)
    tracking.log_training(spark, first, mlflow_ctx, name="table_location")
    assert model_table.current(location, spark)["training_run_id"] == "table-location-1"

    second = train(spark, rows.assign(y=rows["y"] * 2), location, "table-location-2", commit=False)

    def registry_down(*args, **kwargs):
        raise RuntimeError("registry unavailable")

    monkeypatch.setattr(mlflow, "register_model", registry_down)
    with pytest.raises(RuntimeError, match="registry unavailable"):
        tracking.log_training(spark, second, mlflow_ctx, name="table_location")
    monkeypatch.undo()
    assert model_table.current(location, spark)["training_run_id"] == "table-location-1"
    seen = spark.read.table(location).select("training_run_id").distinct().collect()
    assert [r[0] for r in seen] == ["table-location-1"]  # readers of the table name see the previous run
    assert str(MlflowClient().get_model_version_by_alias("table_location", "champion").version) == "1"

    # scoring each run's ModelTable at the one table name: each with its own models (staged by content)
    third = train(spark, rows.assign(y=rows["y"] * -3), location, "table-location-3", commit=False)
    logged = tracking.log_training(spark, third, mlflow_ctx, name="table_location")
    assert model_table.current(location, spark)["registered"] == f"table_location/{logged.version}"
    staging = tmp_path / "staging"
    a, c = score(spark, rows, first, staging), score(spark, rows, third, staging)
    assert a["status"].eq("ok").all() and c["status"].eq("ok").all()
    np.testing.assert_allclose(c["prediction"], mlflow.pyfunc.load_model(logged.model_uri).predict(
        rows[KEYS + FEATURES])["prediction"], rtol=1e-9)
    assert not np.allclose(a["prediction"], c["prediction"])


def test_a_training_run_id_with_a_quote_is_found_again_and_one_with_both_quotes_is_refused(spark, rows, tmp_path,
                                                                                            mlflow_ctx):
    """Ids are quoted for MLflow's filter grammar: ``o'brien`` finds its run and version again (a rerun reuses
    them); an id holding both quote kinds has no spelling there and is refused before anything is logged."""
    table = train(spark, rows, tmp_path / "t", "o'brien-nightly", commit=False)
    first = tracking.log_training(spark, table, mlflow_ctx, name="quoted_ids")
    again = tracking.log_training(spark, table, mlflow_ctx, name="quoted_ids")
    assert (again.run_id, again.version, again.reused) == (first.run_id, first.version, True)
    both = train(spark, rows, tmp_path / "u", """o'brien "nightly\"""", commit=False)
    with pytest.raises(FilterValueError, match=re.escape(f"training_run_id {both.training_run_id!r} holds both")):
        tracking.log_training(spark, both, mlflow_ctx, name="quoted_ids")
    assert len(MlflowClient().search_model_versions("name = 'quoted_ids'")) == 1
