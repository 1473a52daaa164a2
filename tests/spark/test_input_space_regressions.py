"""Regression tests for what the property tier (tests/property) found on inputs the examples never tried: key types,
column names and key values. Each test names the failure it guards against."""
from __future__ import annotations

import datetime
import math
from decimal import Decimal
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from manymodels import tracking
from manymodels.api import score_per_group, score_single
from manymodels.core.keys import key_path
from manymodels.spark.training import train_per_group

pytestmark = pytest.mark.spark


def _rows(keys, n=12, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k in keys:
        X = rng.normal(size=(n, 2))
        for x, y in zip(X, X @ [1.0, -2.0] + rng.normal(scale=0.1, size=n)):
            out.append((k, float(x[0]), float(x[1]), float(y)))
    return out


def _train(spark, df, key, tmp_path, features=("x0", "x1"), label="y", **kw):
    return train_per_group(df, group_cols=[key], feature_cols=list(features), label_col=label,
                           estimator=LinearRegression(), location=str(tmp_path / "table"), progress=False, **kw)


def _scored_ok(spark, df, model, tmp_path):
    scored = score_per_group(df, model, staging_dir=str(tmp_path / "staging")).toPandas()
    assert len(scored) == df.count()
    return scored


@pytest.mark.parametrize("spark_type", ["timestamp", "timestamp_ntz"])
def test_timestamp_keys_keep_their_value_and_score(spark, tmp_path, spark_type):
    """Was: the key came back as year 57,973 (nanoseconds read as microseconds) and every row scored unknown_group."""
    keys = [datetime.datetime(2020, 1, 1), datetime.datetime(2021, 5, 5, 12, 30, 1, 250)]
    df = spark.createDataFrame(_rows(keys), f"k {spark_type}, x0 double, x1 double, y double")
    table = _train(spark, df, "k", tmp_path)
    got = sorted(r["k"] for r in table.read(spark).select("k").collect())
    assert got == keys and str(table.read(spark).schema["k"].dataType.simpleString()) == spark_type
    assert (_scored_ok(spark, df, table, tmp_path)["status"] == "ok").all()


def test_dotted_and_quoted_column_names_train_and_score(spark, tmp_path):
    """Was: a column named ``price.eur`` failed with a raw AnalysisException (read as a struct field)."""
    df = spark.createDataFrame(_rows(["a", "b"]), "`store.id` string, `price.eur` double, `it``s x` double, "
                                                  "`y.next` double")
    table = _train(spark, df, "store.id", tmp_path, features=("price.eur", "it`s x"), label="y.next")
    assert table.counts["ok"] == 2
    assert (_scored_ok(spark, df, table, tmp_path)["status"] == "ok").all()
    model = LinearRegression().fit(np.random.default_rng(1).normal(size=(5, 2)), np.arange(5.0))
    single = score_single(df, model, feature_cols=["price.eur", "it`s x"], passthrough_cols=["store.id"]).toPandas()
    assert len(single) == 24 and (single["status"] == "ok").all()


def test_nan_and_signed_zero_float_keys_are_groups_and_score(spark, tmp_path):
    """Was: a NaN key was refused as a null key; NaN came back as null from the UDF and joined nothing."""
    df = spark.createDataFrame(_rows([1.5, math.nan, -0.0]), "k double, x0 double, x1 double, y double")
    table = _train(spark, df, "k", tmp_path)
    keys = [r["k"] for r in table.read(spark).select("k").collect()]
    assert len(keys) == 3 and sum(math.isnan(k) for k in keys) == 1
    assert table.read(spark).join(df, on=["k"]).count() == 36
    assert (_scored_ok(spark, df, table, tmp_path)["status"] == "ok").all()


def test_null_float_key_is_still_refused(spark, tmp_path):
    from manymodels.errors import InputError

    df = spark.createDataFrame(_rows([1.5, None]), "k double, x0 double, x1 double, y double")
    with pytest.raises(InputError, match="null group key"):
        _train(spark, df, "k", tmp_path)


@pytest.mark.parametrize("spark_type, keys", [
    ("decimal(12,2)", [Decimal("1.50"), Decimal("-3.00")]),
    ("date", [datetime.date(2000, 1, 1), datetime.date(1970, 1, 2)]),
    ("binary", [b"\x00a", b"b"]),
])
def test_decimal_date_and_binary_keys_score_through_the_registered_router(spark, mlflow_ctx, tmp_path, spark_type,
                                                                         keys):
    """Was: the router's signature typed these keys as double, so the pyfunc refused them, and dates arrived as
    timestamps with another text than training's."""
    df = spark.createDataFrame(_rows(keys), f"k {spark_type}, x0 double, x1 double, y double")
    table = _train(spark, df, "k", tmp_path)
    logged = tracking.log_training(spark, table, mlflow_ctx, name=f"regress_{spark_type.split('(')[0]}")
    assert (_scored_ok(spark, df, logged.model_uri, tmp_path)["status"] == "ok").all()
    out = mlflow.pyfunc.load_model(logged.model_uri).predict(df.toPandas()[["k", "x0", "x1"]])
    assert len(out) == 24 and (out["status"] == "ok").all(), out["error"].dropna().head()


def test_long_unicode_keys_log_under_short_distinct_paths(spark, mlflow_ctx, tmp_path):
    """Was: ``OSError: File name too long`` while logging, after training had finished."""
    keys = ["ü" * 1000, "ü" * 999 + "v", "Ab", "ab"]
    df = spark.createDataFrame(_rows(keys), "k string, x0 double, x1 double, y double")
    table = _train(spark, df, "k", tmp_path)
    logged = tracking.log_training(spark, table, mlflow_ctx, name="regress_long_keys")
    local = Path(mlflow.artifacts.download_artifacts(run_id=logged.run_id, artifact_path="models",
                                                     dst_path=str(tmp_path / "dl")))
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*.pkl"))
    assert files == sorted(f"{key_path(('k',), (k,))}.pkl" for k in keys)
    assert len({f.lower() for f in files}) == 4 and all(len(f.encode()) < 200 for f in files)
    metrics = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=logged.run_id,
                                                                  artifact_path="group_metrics.parquet"))
    assert sorted(metrics["k"]) == sorted(keys)  # the full key is kept beside the shortened path


def test_failed_and_skipped_groups_name_the_group(spark, tmp_path):
    """Was: a failed group's error began with the exception alone, and an all-null-label skip did not name it."""
    rows = _rows(["good", "nan-feature"]) + [("no-label", 1.0, 2.0, None)] * 3
    rows = [(k, math.nan if k == "nan-feature" and i == 12 else x0, x1, y) for i, (k, x0, x1, y) in enumerate(rows)]
    df = spark.createDataFrame(rows, "k string, x0 double, x1 double, y double")
    got = {r["k"]: r for r in _train(spark, df, "k", tmp_path).read(spark).collect()}
    assert got["good"]["status"] == "ok"
    assert got["nan-feature"]["status"] == "failed" and "k=nan-feature" in got["nan-feature"]["error"]
    assert got["no-label"]["status"] == "skipped" and "k=no-label" in got["no-label"]["error"]


def test_dotted_names_in_per_group_search_and_fold_ensembles(spark, tmp_path):
    """The same dotted-name failure in per-group search and fold ensembles (found by reading after the property
    tier found it in training)."""
    from sklearn.linear_model import Ridge

    from manymodels.core.ensemble import FoldEnsembleRegressor
    from manymodels.spark.search import search_per_group

    df = spark.createDataFrame(_rows(["a", "b"], n=30), "`store.id` string, `price.eur` double, `x 1` double, "
                                                         "`y.next` double")
    tuned = search_per_group(df, group_cols=["store.id"], label_col="y.next", feature_cols=["price.eur", "x 1"],
                             estimator=Ridge(), param_grid={"alpha": [0.1, 1.0]}, cv=3,
                             location=str(tmp_path / "tuned"))
    assert sorted(r["store.id"] for r in tuned.table.read(spark).select("`store.id`").collect()) == ["a", "b"]
    ensemble = FoldEnsembleRegressor(n_members=3).fit(df, "y.next", feature_cols=["price.eur", "x 1"])
    assert len(ensemble.members_) == 3


def test_classification_router_gives_text_predictions_when_no_row_has_one(spark, mlflow_ctx, tmp_path):
    """Was: a batch in which no row got a prediction (its group skipped) came back as float NaN in the string
    column the signature promises, and mlflow.pyfunc.spark_udf failed on it."""
    from sklearn.linear_model import LogisticRegression

    rows = [(k, x0, x1, "hi" if y > 0 else "lo") for k, x0, x1, y in _rows(["trained"])] + [("small", 1.0, 2.0, "hi")]
    df = spark.createDataFrame(rows, "k string, x0 double, x1 double, y string")
    table = train_per_group(df, group_cols=["k"], feature_cols=["x0", "x1"], label_col="y",
                            estimator=LogisticRegression(), location=str(tmp_path / "table"), progress=False)
    logged = tracking.log_training(spark, table, mlflow_ctx, name="regress_text_predictions")
    udf = mlflow.pyfunc.spark_udf(spark, logged.model_uri, result_type="prediction string, status string, "
                                                                      "error string")
    got = df.where("k = 'small'").select(udf("k", "x0", "x1").alias("o")).select("o.*").toPandas()
    assert got["status"].tolist() == ["skipped"] and got["prediction"].isna().all()
    out = mlflow.pyfunc.load_model(logged.model_uri).predict(df.toPandas()[["k", "x0", "x1"]])
    assert set(out["prediction"].dropna()) <= {"hi", "lo"} and out["prediction"].dtype == object
