"""Retrain only what needs it, on the shared local[2] session and the sqlite MLflow store: data fingerprints,
``retrain="changed"`` and ``retrain="failed"`` carrying the other groups' models over byte for byte into a
new model-table version and a new registered version."""
import hashlib

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LinearRegression, Ridge

from manymodels import tracking
from manymodels.core.panel import make_panel
from manymodels.core.spec import PanelSpec
from manymodels.errors import InputError
from manymodels.spark.training import train_per_group
from manymodels.storage import model_table

pytestmark = pytest.mark.spark
KEYS = ["store", "item"]
FEATURES = ["x0", "x1", "x2"]


@pytest.fixture(scope="module")
def rows():
    frame, _ = make_panel(PanelSpec(n_groups=30, mean_rows=40, n_features=3, seed=5))
    return frame


def train(spark, frame, location, run, **kw):
    args = dict(group_cols=KEYS, feature_cols=FEATURES, label_col="y", estimator=Ridge(alpha=0.3),
                location=str(location), training_run_id=run, progress=False)
    return train_per_group(spark.createDataFrame(frame), **{**args, **kw})


def table_of(spark, table) -> pd.DataFrame:
    got = table.read(spark).toPandas()
    assert not got.duplicated(KEYS).any(), "more than one row for a group"
    return got.set_index(KEYS).sort_index()


def edit(frame: pd.DataFrame, groups, column="x0", delta=1.0) -> pd.DataFrame:
    out = frame.copy()
    mask = out.set_index(KEYS).index.isin(groups)
    out.loc[mask, column] += delta
    return out


def test_data_fingerprints_follow_the_rows_not_their_order_or_partitioning(spark, rows, tmp_path):
    first = table_of(spark, train(spark, rows, tmp_path / "a", "fp-a"))
    shuffled = rows.sample(frac=1.0, random_state=3).reset_index(drop=True)
    df = spark.createDataFrame(shuffled).repartition(7)
    second = table_of(spark, train_per_group(df, group_cols=KEYS, feature_cols=FEATURES, label_col="y",
                                             estimator=Ridge(alpha=0.3), location=str(tmp_path / "b"),
                                             training_run_id="fp-b", progress=False))
    assert first["data_fingerprint"].notna().all() and first["data_fingerprint"].is_unique
    pd.testing.assert_series_equal(first["data_fingerprint"], second["data_fingerprint"])
    assert first["spec_fingerprint"].nunique() == 1
    assert first["spec_fingerprint"].equals(second["spec_fingerprint"])
    assert first["model_sha256"].equals(second["model_sha256"])  # and the models do not depend on it either

    key = first.index[4]
    changed = table_of(spark, train(spark, edit(rows, [key], delta=1e-9), tmp_path / "c", "fp-c"))
    differs = changed.index[changed["data_fingerprint"] != first["data_fingerprint"]].tolist()
    assert differs == [key]  # a change of 1e-9 in one value of one group: that group only


def test_retrain_changed_carries_unchanged_groups_byte_for_byte(spark, rows, tmp_path, mlflow_ctx):
    location = tmp_path / "table"
    a = train(spark, rows, location, "retrain-a")
    logged_a = tracking.log_training(spark, a, mlflow_ctx, name="retrain_model")
    before = table_of(spark, a)

    keys = list(before.index)
    changed, gone = keys[:3], keys[-1]
    new_rows = rows[(rows["store"] == keys[0][0]) & (rows["item"] == keys[0][1])].assign(item=999)
    frame = pd.concat([edit(rows, changed), new_rows], ignore_index=True)
    frame = frame[~frame.set_index(KEYS).index.isin([gone])]

    b = train(spark, frame, location, "retrain-b", retrain="changed")
    after = table_of(spark, b)
    assert b.extra["retrain"] == {"mode": "changed", "trained": 4, "carried": len(keys) - 4, "dropped": 1,
                                  "carried_from_version": a.version}
    assert model_table.current(str(location))["version"] == b.version != a.version
    new_key = (keys[0][0], 999)
    assert set(after.index) == (set(keys) - {gone}) | {new_key}
    carried = after[after["carried_from"].notna()]
    assert sorted(carried.index) == sorted(set(keys) - set(changed) - {gone})
    assert (carried["carried_from"] == "retrain-a").all() and (after["training_run_id"] == "retrain-b").all()
    for col in ("model", "model_sha256", "data_fingerprint", "holdout_r2", "n_rows", "task_attempt"):
        assert carried[col].equals(before.loc[carried.index, col]), col
    retrained = after.loc[changed]
    assert retrained["carried_from"].isna().all()
    assert (retrained["model_sha256"] != before.loc[changed, "model_sha256"]).all()
    assert (retrained["data_fingerprint"] != before.loc[changed, "data_fingerprint"]).all()

    # Carrying is exact: a full retrain of the same input gives the same bytes for every group.
    full = table_of(spark, train(spark, frame, tmp_path / "full", "retrain-full"))
    assert full["model_sha256"].equals(after["model_sha256"])

    # Pruning drops the version the carried rows came from; the committed table keeps every byte.
    assert model_table.prune(str(location), keep=0, min_age_hours=0) == [a.version]
    assert [str(v) for v in model_table.versions(str(location))] == [b.version]
    pruned = model_table.read(spark, str(location)).toPandas().set_index(KEYS).sort_index()
    assert pruned["model"].equals(after.sort_index()["model"])

    # A new registered version whose group artifacts are the carried bytes.
    logged_b = tracking.log_training(spark, b, mlflow_ctx, name="retrain_model")
    assert int(logged_b.version) == int(logged_a.version) + 1 and not logged_b.reused
    client = MlflowClient()
    run = client.get_run(logged_b.run_id)
    assert run.data.metrics["groups_carried"] == len(keys) - 4 and run.data.metrics["groups_trained"] == 4
    assert run.data.params["retrain"] == "changed"
    key = carried.index[0]
    path = mlflow.artifacts.download_artifacts(run_id=logged_b.run_id, dst_path=str(tmp_path / "dl"),
                                               artifact_path=f"models/store={key[0]}/item={key[1]}.pkl")
    blob = open(path, "rb").read()
    assert hashlib.sha256(blob).hexdigest() == before.loc[key, "model_sha256"]

    # Carrying again from a carried row keeps the run that fitted the model.
    c = train(spark, frame, location, "retrain-c", retrain="changed")
    again = table_of(spark, c)
    assert c.extra["retrain"]["trained"] == 0
    assert again.loc[carried.index, "carried_from"].eq("retrain-a").all()
    assert again.loc[changed, "carried_from"].eq("retrain-b").all()
    assert again["model_sha256"].equals(after["model_sha256"])


def test_retrain_failed_trains_only_the_failed_groups(spark, rows, tmp_path):
    location = tmp_path / "table"
    keys = list(rows.drop_duplicates(KEYS).set_index(KEYS).index)
    broken = keys[:2]
    bad = rows.copy()
    bad.loc[bad.set_index(KEYS).index.isin(broken), "x1"] = np.nan  # LinearRegression refuses NaN: failed
    a = train(spark, bad, location, "failed-a", estimator=LinearRegression())
    assert a.counts["failed"] == 2
    before = table_of(spark, a)

    b = train(spark, rows, location, "failed-b", estimator=LinearRegression(), retrain="failed")
    after = table_of(spark, b)
    assert b.counts == {"ok": len(keys), "failed": 0, "skipped": 0}
    assert b.extra["retrain"]["trained"] == 2 and b.extra["retrain"]["carried"] == len(keys) - 2
    assert after.loc[broken, "carried_from"].isna().all()
    others = [k for k in keys if k not in broken]
    assert after.loc[others, "model_sha256"].equals(before.loc[others, "model_sha256"])
    assert after.loc[others, "carried_from"].eq("failed-a").all()

    # Another estimator: the previous models are not what this run asks for, so nothing is carried.
    pointer = model_table.current(str(location))
    with pytest.raises(InputError, match=r"retrain='failed'.*different spec.*retrain='changed'"):
        train(spark, rows, location, "failed-c", estimator=Ridge(alpha=5.0), retrain="failed")
    assert model_table.current(str(location)) == pointer  # refused before writing anything
    c = train(spark, rows, location, "failed-d", estimator=Ridge(alpha=5.0), retrain="changed")
    assert c.extra["retrain"]["trained"] == len(keys) and c.extra["retrain"]["carried"] == 0


def test_retrain_without_a_committed_table_trains_everything(spark, rows, tmp_path):
    table = train(spark, rows, tmp_path / "empty", "first-run", retrain="changed")
    assert table.extra["retrain"]["trained"] == table.n_groups == 30 and table.extra["retrain"]["carried"] == 0
