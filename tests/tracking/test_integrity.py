"""Model integrity end to end (issue 7, part 4): tampered blobs refused per group naming group and run, library
version mismatches warned with both versions, and per-group models stored as skops with explicit trusted types:
trained on Spark, logged and registered, scored through the registered router and through Spark."""
import inspect
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sklearn
from mlflow import MlflowClient
from sklearn.linear_model import LinearRegression
from sklearn.tree import DecisionTreeRegressor

from manymodels import jobs, tracking
from manymodels.api import score_per_group
from manymodels.core import model_bytes
from manymodels.core.fitting import fit_group
from manymodels.core.model_bytes import LoadPolicy
from manymodels.core.model_cache import MODEL_CACHE
from manymodels.core.panel import make_panel
from manymodels.core.routing import REFUSED, route_predict
from manymodels.core.spec import PanelSpec, TrainSpec
from manymodels.jobs import cli
from manymodels.spark.scoring import resolve_group_models, score_group_batches
from manymodels.spark.training import train_per_group
from manymodels.storage.packed_store import PackedModels, read_blobs, read_index, read_policy

KEYS = ["store", "item"]
FEATURES = ["x0", "x1", "x2"]


@pytest.fixture(scope="module")
def panel():
    # a seed no other test module uses: these models are in no reused Python worker's cache yet
    rows, _ = make_panel(PanelSpec(n_groups=12, mean_rows=40, n_features=3, seed=4242))
    return rows.assign(row_id=np.arange(len(rows)))


def train(spark, rows, tmp, run, **settings):
    df = spark.createDataFrame(rows.drop(columns=["row_id"]))
    return train_per_group(df, group_cols=KEYS, feature_cols=FEATURES, label_col="y", estimator=LinearRegression(),
                           training_run_id=run, location=str(tmp / run), progress=False, **settings)


def local_models(table) -> dict:
    policy = LoadPolicy.of(table.spec)
    return {(r.store, r.item): model_bytes.loads(r.model, r.model_sha256, model_format=r.model_format,
                                                   policy=policy)
            for r in pd.read_parquet(table.version).itertuples() if r.status == "ok"}


def expected(models: dict, data: pd.DataFrame) -> pd.Series:
    out = pd.Series(np.nan, index=data["row_id"].to_numpy())
    for key, part in data.groupby(KEYS):
        out[part["row_id"].to_numpy()] = models[key].predict(part[FEATURES].to_numpy())
    return out


def rewrite(path: Path, change) -> None:
    """Rewrite every Parquet file of ``path`` (a file or a folder) with ``change(frame)``: same schema and
    metadata, the recorded checksums left as they were."""
    for f in [path] if path.is_file() else sorted(path.glob("*.parquet")):
        table = pq.read_table(f)
        new = pa.Table.from_pandas(change(table.to_pandas()), schema=table.schema, preserve_index=False)
        pq.write_table(new.replace_schema_metadata(table.schema.metadata), f)


def flip_blob(frame: pd.DataFrame, key) -> pd.DataFrame:
    hit = [tuple(str(v) for v in k) == tuple(str(v) for v in key) for k in
           (frame[KEYS].itertuples(index=False, name=None) if "key" not in frame else frame["key"].map(tuple))]
    for i in np.flatnonzero(hit):
        blob = bytes(frame.at[i, "model"])
        frame.at[i, "model"] = blob[:60] + bytes([blob[60] ^ 1]) + blob[61:]
    return frame


def old_sklearn(frame: pd.DataFrame, key) -> pd.DataFrame:
    import json

    mask = (frame["store"] == key[0]) & (frame["item"] == key[1])  # in one of the version's part files
    if mask.any():
        versions = json.loads(frame.loc[mask, "library_versions"].iloc[0])
        frame.loc[mask, "library_versions"] = json.dumps({**versions, "scikit-learn": "0.0.1"}, sort_keys=True)
    return frame


def artifact_store(model_name: str, version: str) -> Path:
    """The registered router's own ``models.parquet`` (not a downloaded copy) in the local artifact store."""
    client = MlflowClient()
    mv = client.get_model_version(model_name, version)
    source = mv.source  # models:/m-<logged model id> (MLflow 3) or the artifact folder itself
    location = client.get_logged_model(source.removeprefix("models:/").split("/")[0]).artifact_location \
        if source.startswith("models:/") else source
    found = list(Path(location.removeprefix("file://")).rglob("models.parquet"))
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------- (a) tampered blobs

@pytest.mark.spark
def test_tampered_blob_in_a_committed_model_table_is_refused_for_that_group_only(spark, panel, tmp_path):
    rows = panel.assign(y=panel["y"] * 1.5)
    table = train(spark, rows, tmp_path, "integrity-tamper-table")
    want = expected(local_models(table), rows)
    victim = tuple(pd.read_parquet(table.version).query("status == 'ok'")[KEYS].iloc[3])
    rewrite(Path(table.version), lambda f: flip_blob(f, victim))
    got = score_per_group(spark.createDataFrame(rows.drop(columns=["y"])), table, passthrough_cols=["row_id"],
                          staging_dir=str(tmp_path / "staging")).toPandas()
    hit = (got["store"] == victim[0]) & (got["item"] == victim[1])
    assert hit.any() and got.loc[hit, "status"].eq(REFUSED).all() and got.loc[hit, "prediction"].isna().all()
    message = got.loc[hit, "error"].iloc[0]
    assert message.startswith("ModelIntegrityError: Refusing to load model group "
                              f"store={victim[0]}, item={victim[1]} of training run integrity-tamper-table")
    others = got[~hit]
    assert others["status"].eq("ok").all() and len(others) == len(rows) - hit.sum()
    np.testing.assert_allclose(others["prediction"], want[others["row_id"]].to_numpy(), rtol=1e-12)


@pytest.mark.spark
def test_tampered_registered_router_refuses_the_group_and_old_library_versions_warn(spark, panel, tmp_path,
                                                                                     mlflow_ctx):
    rows = panel.assign(y=panel["y"] * 2.5)
    table = train(spark, rows, tmp_path, "integrity-tamper-router")
    want = expected(local_models(table), rows)
    ok_keys = pd.read_parquet(table.version).query("status == 'ok'")[KEYS]
    old, victim = tuple(ok_keys.iloc[0]), tuple(ok_keys.iloc[5])
    rewrite(Path(table.version), lambda f: old_sklearn(f, old))  # (b): trained "with scikit-learn 0.0.1"
    logged = tracking.log_training(spark, table, mlflow_ctx, name="integrity_tamper")
    rewrite(artifact_store("integrity_tamper", logged.version), lambda f: flip_blob(f, victim))  # (a)
    batch = rows.drop(columns=["y"])
    MODEL_CACHE.clear()  # this process has not loaded these models: the router must read and check them
    router = mlflow.pyfunc.load_model(logged.model_uri)
    with pytest.warns(RuntimeWarning) as caught:
        out = router.predict(batch[KEYS + FEATURES])
    mismatch = [str(w.message) for w in caught if "library version mismatch" in str(w.message)]
    assert mismatch == [f"Model group store={old[0]}, item={old[1]} of training run integrity-tamper-router: library "
                        f"version mismatch (scikit-learn trained with 0.0.1, loading with {sklearn.__version__})."]
    hit = ((batch["store"] == victim[0]) & (batch["item"] == victim[1])).to_numpy()
    assert out.loc[hit, "status"].eq(REFUSED).all()
    assert (f"group store={victim[0]}, item={victim[1]} of training run integrity-tamper-router"
            in out.loc[hit, "error"].iloc[0]) and "ModelIntegrityError" in out.loc[hit, "error"].iloc[0]
    assert out.loc[~hit, "status"].eq("ok").all()
    np.testing.assert_allclose(out.loc[~hit, "prediction"], want[batch["row_id"][~hit]].to_numpy(), rtol=1e-12)

    # (b) on the model-table path too: the per-group scoring body, run in this process, warns the same way
    MODEL_CACHE.clear()
    models = resolve_group_models(spark, table, staging_dir=str(tmp_path / "staging"))
    with pytest.warns(RuntimeWarning, match=r"scikit-learn trained with 0\.0\.1, loading with " + sklearn.__version__):
        scored = pd.concat(score_group_batches(iter([batch]), models=models, passthrough=("row_id",)))
    assert scored["status"].eq("ok").all()  # the model table's own blob of the victim was not tampered


# ---------------------------------------------------------------- (c) skops end to end

@pytest.mark.spark
def test_skops_models_train_log_register_and_score_like_pickle(spark, panel, tmp_path, mlflow_ctx):
    pickled = train(spark, panel, tmp_path, "integrity-pickle")
    skopsed = train(spark, panel, tmp_path, "integrity-skops", model_format="skops")
    frame = pd.read_parquet(skopsed.version)
    ok = frame[frame["status"] == "ok"]
    assert len(ok) == skopsed.counts["ok"] > 0 and ok["model_format"].eq("skops").all()
    assert ok["model"].map(lambda b: bytes(b[:4]) == b"PK\x03\x04").all()
    assert ok["library_versions"].str.contains('"skops"').all()
    assert pd.read_parquet(pickled.version)["model_format"].eq("pickle5").all()
    want = expected(local_models(pickled), panel)
    np.testing.assert_allclose(expected(local_models(skopsed), panel), want, rtol=1e-12)

    logged = tracking.log_training(spark, skopsed, mlflow_ctx, name="integrity_skops")
    policy = read_policy(artifact_store("integrity_skops", logged.version))
    assert policy == LoadPolicy.of(skopsed.spec) and policy.model_format == "skops"
    files = list(Path(mlflow.artifacts.download_artifacts(run_id=logged.run_id, artifact_path="models")).rglob("*"))
    assert sum(p.suffix == ".skops" for p in files) == len(ok) and not any(p.suffix == ".pkl" for p in files)

    batch = panel.drop(columns=["y"])
    MODEL_CACHE.clear()
    out = mlflow.pyfunc.load_model(f"models:/integrity_skops@{logged.alias}").predict(batch[KEYS + FEATURES])
    assert out["status"].eq("ok").all()
    np.testing.assert_allclose(out["prediction"], want[batch["row_id"]].to_numpy(), rtol=1e-12)

    df = spark.createDataFrame(batch)
    for source in (skopsed, logged.model_uri):
        got = score_per_group(df, source, passthrough_cols=["row_id"], staging_dir=str(tmp_path / "s")).toPandas()
        assert got["status"].eq("ok").all() and len(got) == len(batch)
        np.testing.assert_allclose(got["prediction"], want[got["row_id"]].to_numpy(), rtol=1e-12)


def test_skops_model_with_untrusted_types_fails_its_group_at_training(panel):
    part = panel[(panel["store"] == panel["store"].iloc[0]) & (panel["item"] == panel["item"].iloc[0])]
    key = (int(part["store"].iloc[0]), int(part["item"].iloc[0]))
    spec = TrainSpec(tuple(KEYS), tuple(FEATURES), "y", DecisionTreeRegressor(max_depth=2), model_format="skops",
                     training_run_id="t-skops")
    row = fit_group(key, part, spec=spec)
    assert row["status"] == "failed" and row["model"] is None and row["model_format"] == "skops"
    assert "UntrustedModelError" in row["error"] and "'sklearn.tree._tree.Tree'" in row["error"]
    assert "trusted_types" in row["error"]
    trusted = TrainSpec(tuple(KEYS), tuple(FEATURES), "y", DecisionTreeRegressor(max_depth=2), model_format="skops",
                        trusted_types=("sklearn.tree.DecisionTreeRegressor", "sklearn.tree._tree.Tree"),
                        training_run_id="t-skops")
    assert fit_group(key, part, spec=trusted)["status"] == "ok"


def test_router_refuses_skops_types_its_policy_does_not_trust(panel, tmp_path):
    """A store whose policy trusts fewer types than a blob names (a swapped blob, checksum included)."""
    part = panel[(panel["store"] == panel["store"].iloc[0]) & (panel["item"] == panel["item"].iloc[0])]
    key = (int(part["store"].iloc[0]), int(part["item"].iloc[0]))
    extended = TrainSpec(tuple(KEYS), tuple(FEATURES), "y", DecisionTreeRegressor(max_depth=2), model_format="skops",
                         trusted_types=("sklearn.tree.DecisionTreeRegressor", "sklearn.tree._tree.Tree"))
    row = fit_group(key, part, spec=extended)
    narrow = TrainSpec(tuple(KEYS), tuple(FEATURES), "y", LinearRegression(), model_format="skops")
    with PackedModels(tmp_path, policy=LoadPolicy.of(narrow)) as packed:
        packed.add(pd.DataFrame([row]), KEYS)
    path = tmp_path / "models.parquet"
    MODEL_CACHE.clear()
    out = route_predict(part, key_cols=KEYS, feature_cols=FEATURES, index=read_index(path),
                        load_blobs=lambda entries: read_blobs(path, entries), run_label="training run t-narrow",
                        policy=read_policy(path))
    assert out["status"].eq(REFUSED).all() and MODEL_CACHE.loads == 0
    error = out["error"].iloc[0]
    assert f"group store={key[0]}, item={key[1]} of training run t-narrow" in error
    assert "'sklearn.tree._tree.Tree'" in error and "trusted_types" in error


def test_cli_train_takes_model_format_and_trusted_types():
    args = cli._parser().parse_args(["train", "--input", "x", "--group_cols", "a", "--feature_cols", "b",
                                     "--label_col", "y", "--model_format", "skops",
                                     "--trusted_types", "sklearn.tree._tree.Tree, numpy.log1p"])
    assert args.model_format == "skops" and args.trusted_types == ["sklearn.tree._tree.Tree", "numpy.log1p"]
    assert cli._parser().parse_args(["train", "--input", "x", "--group_cols", "a", "--feature_cols", "b",
                                     "--label_col", "y"]).model_format == "pickle5"
    params = inspect.signature(jobs.train_and_register).parameters
    assert params["model_format"].default == "pickle5" and "trusted_types" in params
