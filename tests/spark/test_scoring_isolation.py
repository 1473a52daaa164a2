"""One row's or one group's predict error never fails a scoring job: the failing rows are bisected out and
marked ``predict_failed`` (named group, run or model version, exception), every other row still scores; and
models trained with ``pass_dataframe=True`` score the same through every path."""
import math

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline

from manymodels import tracking
from manymodels.api import score_per_group, score_single
from manymodels.core import model_bytes
from manymodels.core.model_cache import MODEL_CACHE
from manymodels.core.routing import PREDICT_FAILED, route_predict
from manymodels.spark.training import train_per_group

pytestmark = pytest.mark.spark
KEYS = ["store"]
FEATURES = ["x0", "x1", "x2"]


class CountingRegression(LinearRegression):
    """LinearRegression counting its predict calls (module level, so it pickles)."""

    calls = 0

    def predict(self, X):
        type(self).calls += 1
        return super().predict(X)


class AlwaysFails(LinearRegression):
    calls = 0

    def predict(self, X):
        type(self).calls += 1
        raise RuntimeError("this model cannot predict")


def make_panel(n_groups=4, rows=30, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for g in range(1, n_groups + 1):
        X = rng.normal(size=(rows, 3))
        parts.append(pd.DataFrame(X, columns=FEATURES).assign(
            store=g, y=g + X @ np.array([1.0, -2.0 * g, 0.5]) + rng.normal(scale=0.1, size=rows)))
    return pd.concat(parts, ignore_index=True)[KEYS + FEATURES + ["y"]]


def index_of(models: dict) -> tuple[dict, dict]:
    index, blobs = {}, {}
    for key, model in models.items():
        blob = model_bytes.dumps(model)
        sha = model_bytes.sha256(blob)
        blobs[sha] = blob
        index[(str(key),)] = {"status": "ok", "error": None, "model_sha256": sha,
                              "library_versions": model_bytes.library_versions()}
    return index, blobs


def route(df, index, blobs, **kw):
    return route_predict(df, key_cols=KEYS, feature_cols=FEATURES, index=index, run_label="training run r",
                         load_blobs=lambda entries: {e["model_sha256"]: blobs[e["model_sha256"]] for e in entries},
                         **kw)


def test_route_predict_isolates_the_failing_rows_with_bounded_retries():
    MODEL_CACHE.clear()
    rows = make_panel(n_groups=2, rows=200)
    models = {g: CountingRegression().fit(p[FEATURES].to_numpy(), p["y"]) for g, p in rows.groupby("store")}
    index, blobs = index_of(models)
    df = rows[KEYS + FEATURES].copy()
    bad = [3, 150]  # two rows of group 1 (rows 0-199); group 2 is clean
    df.loc[bad[0], "x1"] = np.nan
    df.loc[bad[1], "x2"] = np.nan
    CountingRegression.calls = 0
    out = route(df, index, blobs)
    assert len(out) == len(df) and out["store"].tolist() == df["store"].tolist()
    assert out.index[out["status"] == PREDICT_FAILED].tolist() == bad
    assert out["prediction"].iloc[bad].isna().all()
    for i in bad:
        assert out["error"].iloc[i].startswith("predict failed for group store=1 of training run r: ValueError: ")
        assert "NaN" in out["error"].iloc[i] and "not isolated" not in out["error"].iloc[i]
    ok = out["status"] == "ok"
    assert ok.sum() == len(df) - 2 and out["error"][ok].isna().all()
    expected = np.concatenate([models[g].predict(p[FEATURES].to_numpy()) for g, p in df.drop(index=bad).groupby(
        "store")])
    np.testing.assert_allclose(out["prediction"][ok], expected, rtol=1e-12)
    # 1 call for the clean group; 1 + bisection for the other: far fewer than one call per row
    assert CountingRegression.calls <= 2 + 2 * len(bad) * math.ceil(math.log2(200))


def test_route_predict_gives_up_whole_ranges_past_the_retry_budget():
    """A model that fails on every row costs O(log n) calls, not one per row; its rows say they were not
    isolated; the other group still scores, classifier probabilities included."""
    MODEL_CACHE.clear()
    rows = make_panel(n_groups=2, rows=1000)
    label = np.where(rows["y"] > rows["y"].median(), "hi", "lo")
    models = {1: AlwaysFails().fit(rows[FEATURES].to_numpy(), rows["y"]),
              2: LogisticRegression().fit(rows[FEATURES].to_numpy(), label)}
    index, blobs = index_of(models)
    AlwaysFails.calls = 0
    out = route(rows[KEYS + FEATURES], index, blobs, with_proba=True)
    failed = out["store"] == 1
    assert (out["status"][failed] == PREDICT_FAILED).all() and out["prediction"][failed].isna().all()
    assert out["probabilities"][failed].isna().all()
    assert out["error"][failed].str.contains("RuntimeError: this model cannot predict").all()
    assert out["error"][failed].str.contains("not isolated further").any()
    assert AlwaysFails.calls < 1000 // 2
    assert (out["status"][~failed] == "ok").all()
    clean = rows[~failed.to_numpy()][FEATURES].to_numpy()
    assert out["prediction"][~failed].tolist() == models[2].predict(clean).tolist()
    assert out["probabilities"][~failed].map(lambda d: sorted(d) == ["hi", "lo"]).all()


@pytest.fixture(scope="module")
def linear(spark, mlflow_ctx, tmp_path_factory):
    rows = make_panel()
    table = train_per_group(spark.createDataFrame(rows), group_cols=KEYS, feature_cols=FEATURES, label_col="y",
                            estimator=LinearRegression(), training_run_id="iso-linear",
                            location=str(tmp_path_factory.mktemp("iso") / "table"))
    logged = tracking.log_training(spark, table, mlflow_ctx, name="isolation_router")
    models = {r.store: model_bytes.loads(r.model, r.model_sha256)
              for r in pd.read_parquet(table.version).itertuples()}
    data = rows.drop(columns=["y"]).assign(row_id=np.arange(len(rows)))
    bad = int(data.index[data["store"] == 2][4])
    data.loc[bad, "x1"] = np.nan
    expected = {i: models[s].predict(data.loc[[i], FEATURES].to_numpy())[0]
                for i, s in zip(data["row_id"], data["store"]) if i != bad}
    return table, logged, models, data, bad, expected


def check_isolated(got, data, bad, expected, run_text, no_error=(None,)):
    assert len(got) == len(data) and sorted(got["row_id"]) == data["row_id"].tolist()
    got = got.set_index("row_id").sort_index()
    ok = got.drop(index=bad)
    assert (ok["status"] == "ok").all() and ok["error"].map(lambda e: pd.isna(e) or e in no_error).all()
    np.testing.assert_allclose(ok["prediction"], [expected[i] for i in ok.index], rtol=1e-9)
    row = got.loc[bad]
    assert row["status"] == PREDICT_FAILED and pd.isna(row["prediction"])
    assert row["error"].startswith(f"predict failed for group store=2 of {run_text}: ValueError: ")
    assert "NaN" in row["error"]


def test_score_per_group_marks_only_the_bad_row(spark, linear, tmp_path):
    table, logged, _, data, bad, expected = linear
    df = spark.createDataFrame(data)
    got = score_per_group(df, table, passthrough_cols=["row_id"], staging_dir=str(tmp_path)).toPandas()
    check_isolated(got, data, bad, expected, "training run iso-linear")
    got = score_per_group(df, logged.model_uri, passthrough_cols=["row_id"], staging_dir=str(tmp_path)).toPandas()
    check_isolated(got, data, bad, expected, f"training run iso-linear (isolation_router/{logged.version})")


def test_registered_router_pyfunc_and_spark_udf_mark_only_the_bad_row(spark, linear):
    _, logged, _, data, bad, expected = linear
    pyfunc = mlflow.pyfunc.load_model(logged.model_uri)
    got = pyfunc.predict(data[KEYS + FEATURES]).assign(row_id=data["row_id"].to_numpy())
    check_isolated(got, data, bad, expected, "training run iso-linear")
    udf = mlflow.pyfunc.spark_udf(spark, logged.model_uri, result_type="prediction double, status string, "
                                                                      "error string")
    scored = spark.createDataFrame(data).select("row_id", udf(*KEYS, *FEATURES).alias("out")).select("row_id", "out.*")
    # MLflow's spark_udf casts a struct's string field with astype(str) when it is not all null, so the ok
    # rows' null error arrives as the text "None" (mlflow.pyfunc._convert_struct_values)
    check_isolated(scored.toPandas(), data, bad, expected, "training run iso-linear", no_error=(None, "None"))


def test_score_single_marks_only_the_bad_rows(spark, linear):
    _, _, models, data, fixture_bad, _ = linear
    frame = data[FEATURES].assign(id=np.arange(len(data)))
    frame.loc[[7, 60, 61], "x0"] = np.nan  # besides the fixture's NaN row: adjacent and scattered bad rows
    bad = sorted([7, 60, 61, fixture_bad])
    model = models[1]
    got = score_single(spark.createDataFrame(frame), model, feature_cols=FEATURES,
                       passthrough_cols=["id"]).toPandas().sort_values("id").reset_index(drop=True)
    assert list(got.columns) == ["id", "prediction", "status", "error", "model_version"]
    assert got["id"].tolist() == frame["id"].tolist()
    failed = got["status"] == PREDICT_FAILED
    assert got.index[failed].tolist() == bad and got["prediction"][failed].isna().all()
    version = got["model_version"].iloc[0]
    assert got["error"][failed].str.startswith(f"predict failed for model {version}: ValueError: ").all()
    assert (got["status"][~failed] == "ok").all() and got["error"][~failed].isna().all()
    clean = frame.drop(index=bad)
    np.testing.assert_allclose(got["prediction"][~failed], model.predict(clean[FEATURES].to_numpy()), rtol=1e-12)


def test_score_single_classifier_nulls_prediction_and_probabilities_of_bad_rows(spark):
    rows = make_panel(n_groups=1, rows=300)
    X = rows[FEATURES]
    model = LogisticRegression().fit(X, np.where(rows["y"] > rows["y"].median(), "hi", "lo"))
    frame = X.assign(id=np.arange(len(X)))
    frame.loc[[0, 299], "x2"] = np.nan
    got = score_single(spark.createDataFrame(frame), model, passthrough_cols=["id"]).toPandas().sort_values("id")
    failed = got["status"].eq(PREDICT_FAILED).to_numpy()
    assert np.flatnonzero(failed).tolist() == [0, 299]
    assert got["prediction"][failed].isna().all() and got["probabilities"][failed].isna().all()
    assert got["prediction"][~failed].tolist() == model.predict(X.iloc[1:299]).tolist()
    proba = np.array([[p["hi"], p["lo"]] for p in got["probabilities"][~failed]])
    np.testing.assert_allclose(proba, model.predict_proba(X.iloc[1:299]), rtol=1e-12)


def test_pass_dataframe_models_score_the_same_through_every_path(spark, mlflow_ctx, tmp_path):
    """A pipeline that selects columns by name (and reorders them) needs a DataFrame at predict time too."""
    rows = make_panel(seed=3)
    pipe = Pipeline([("cols", ColumnTransformer([("sel", "passthrough", ["x1", "x0"])])),
                     ("lr", LinearRegression())])
    table = train_per_group(spark.createDataFrame(rows), group_cols=KEYS, feature_cols=FEATURES, label_col="y",
                            estimator=pipe, training_run_id="iso-frame", pass_dataframe=True,
                            location=str(tmp_path / "table"))
    logged = tracking.log_training(spark, table, mlflow_ctx, name="isolation_router_frame")
    models = {r.store: model_bytes.loads(r.model, r.model_sha256)
              for r in pd.read_parquet(table.version).itertuples()}
    data = rows.drop(columns=["y"]).assign(row_id=np.arange(len(rows)))
    expected = np.concatenate([models[g].predict(p[FEATURES]) for g, p in data.groupby("store")])
    df = spark.createDataFrame(data)
    for source in (table, logged.model_uri):
        got = score_per_group(df, source, passthrough_cols=["row_id"], staging_dir=str(tmp_path / "s")).toPandas()
        got = got.sort_values("row_id")
        assert got["status"].eq("ok").all(), got["error"].dropna().head(1).tolist()
        np.testing.assert_allclose(got["prediction"], expected, rtol=1e-12)
    via_pyfunc = mlflow.pyfunc.load_model(logged.model_uri).predict(data[KEYS + FEATURES])
    assert via_pyfunc["status"].eq("ok").all()
    np.testing.assert_allclose(via_pyfunc["prediction"], expected, rtol=1e-12)
    one = data[data["store"] == 2]
    single = score_single(spark.createDataFrame(one), models[2], passthrough_cols=["row_id"]).toPandas()
    single = single.sort_values("row_id")
    assert single["status"].eq("ok").all()
    np.testing.assert_allclose(single["prediction"], expected[data["store"].to_numpy() == 2], rtol=1e-12)
