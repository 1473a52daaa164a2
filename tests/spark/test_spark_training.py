"""Per-group training on the shared local[2] session."""
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, Ridge

from manymodels.core import model_bytes
from manymodels.core.fitting import GroupFitError, fit_group
from manymodels.core.panel import make_panel, write_gzip_per_group
from manymodels.core.planning import murmur3_int
from manymodels.core.spec import PanelSpec
from manymodels.errors import InputError
from manymodels.spark.training import build_model_table, make_spec, train_per_file, train_per_group
from manymodels.storage import model_table

pytestmark = pytest.mark.spark
FEATURES = ["x0", "x1", "x2"]


def train(df, tmp_path, **kw):
    args = dict(group_cols=["store", "item"], feature_cols=FEATURES, label_col="y", estimator=LinearRegression(),
                location=str(tmp_path / "table"), holdout_fraction=0.0)
    args.update(kw)
    return train_per_group(df, **args)


@pytest.fixture(scope="module")
def panel_df(spark, small_panel):
    _, rows, truth = small_panel
    return spark.createDataFrame(rows), rows, truth


def coefs(table_pdf):
    out = {}
    for r in table_pdf.itertuples():
        model = model_bytes.loads(r.model, r.model_sha256)
        out[(r.store, r.item)] = np.r_[model.coef_, model.intercept_]
    return out


def test_spark_path_equals_pandas_groupby_loop(spark, panel_df, tmp_path):
    df, rows, _ = panel_df
    table = train(df, tmp_path)
    got = table.read(spark).toPandas()
    assert table.counts == {"ok": 40, "failed": 0, "skipped": 0} and len(got) == 40
    loop = {}
    for key, g in rows.groupby(["store", "item"]):
        m = LinearRegression().fit(g[FEATURES], g["y"])
        loop[key] = np.r_[m.coef_, m.intercept_]
    spark_coefs = coefs(got)
    assert spark_coefs.keys() == loop.keys()
    for key in loop:
        np.testing.assert_allclose(spark_coefs[key], loop[key], rtol=1e-9, atol=1e-9)


def test_recovered_coefficients_match_the_known_truth(spark, panel_df, tmp_path):
    df, _, truth = panel_df
    got = coefs(train(df, tmp_path).read(spark).toPandas())
    for t in truth.itertuples():
        est = got[(t.store, t.item)]
        np.testing.assert_allclose(est[:3], [t.beta_0, t.beta_1, t.beta_2], atol=0.35)
        assert abs(est[3] - t.intercept) < 0.35


def test_model_table_rows_are_complete(spark, panel_df, tmp_path):
    df, rows, _ = panel_df
    got = train(df, tmp_path, holdout_fraction=0.2, training_run_id="complete-1").read(spark).toPandas()
    assert got["training_run_id"].eq("complete-1").all()
    assert got["task_attempt"].str.contains("attempt=0").all()
    assert (got["holdout_r2"] > 0.5).all() and got["holdout_r2"].median() > 0.9 and (got["train_rmse"] > 0).all()
    assert got["library_versions"].str.contains("scikit-learn").all()
    sizes = rows.groupby(["store", "item"]).size()
    assert [sizes[(r.store, r.item)] for r in got.itertuples()] == got["n_rows"].tolist()
    # the same group fitted by the pure core gives the same bytes: seeds do not depend on the executor
    r = next(got.itertuples())
    part = rows[(rows["store"] == r.store) & (rows["item"] == r.item)]
    spec = make_spec(df, group_cols=["store", "item"], feature_cols=FEATURES, label_col="y",
                     estimator=LinearRegression(), training_run_id="complete-1")
    again = fit_group((r.store, r.item), part, spec=spec)
    assert again["model_sha256"] == r.model_sha256, again["error"]


@pytest.mark.parametrize("aqe", ["true", "false"])
def test_packed_plan_is_correct_with_aqe_on_and_off(spark, panel_df, aqe):
    df, rows, _ = panel_df
    old = spark.conf.get("spark.sql.adaptive.enabled")
    spark.conf.set("spark.sql.adaptive.enabled", aqe)
    try:
        spec = make_spec(df, group_cols=["store", "item"], feature_cols=FEATURES, label_col="y",
                         estimator=Ridge(), training_run_id="aqe")
        table, task_groups = build_model_table(df, spec, tasks_per_core=2)  # 4 partitions on local[2]
        got = table.toPandas()
        # RDD only in the test, to count partitions
        assert len(task_groups) == 4 and sum(task_groups) == 40 and table.rdd.getNumPartitions() == 4
    finally:
        spark.conf.set("spark.sql.adaptive.enabled", old)
    assert len(got) == 40 and not got.duplicated(["store", "item"]).any()


def test_murmur3_matches_spark_hash(spark):
    values = list(range(-50, 50)) + [2**31 - 1, -(2**31)]
    got = spark.createDataFrame([(v,) for v in values], "v int").selectExpr("v", "hash(v) AS h").toPandas()
    assert [murmur3_int(v) for v in got["v"]] == got["h"].tolist()


def test_group_with_all_null_labels_is_skipped_not_failed(spark, panel_df, tmp_path):
    _, rows, _ = panel_df
    first = rows[["store", "item"]].iloc[0]
    mask = (rows["store"] == first["store"]) & (rows["item"] == first["item"])
    df = spark.createDataFrame(rows.assign(y=rows["y"].where(~mask)))
    table = train(df, tmp_path)
    assert table.counts == {"ok": 39, "failed": 0, "skipped": 1}
    skipped = table.read(spark).where("status = 'skipped'").toPandas().iloc[0]
    assert "labels in column 'y' are null" in skipped["error"] and skipped["model"] is None


def test_null_group_keys_fail_before_training(spark, panel_df, tmp_path):
    _, rows, _ = panel_df
    bad = rows.astype({"store": "float64"})
    bad.loc[:4, "store"] = np.nan
    df = spark.createDataFrame(bad)
    with pytest.raises(InputError, match=r"5 input row\(s\) have a null group key in column\(s\) 'store'"):
        train(df, tmp_path)
    assert not (tmp_path / "table").exists()


def test_empty_input_fails_clearly(spark, panel_df, tmp_path):
    df, _, _ = panel_df
    with pytest.raises(InputError, match="no rows"):
        train(df.limit(0), tmp_path)


def test_missing_column_and_bad_types_fail_before_any_job(spark, panel_df, tmp_path):
    df, _, _ = panel_df
    with pytest.raises(InputError, match="'x7'"):
        train(df, tmp_path, feature_cols=["x0", "x7"])
    with pytest.raises(InputError, match="'store_name' is string"):
        train(df.withColumn("store_name", df["store"].cast("string")), tmp_path, feature_cols=["x0", "store_name"])
    with pytest.raises(InputError, match="Unknown parameter"):
        train(df, tmp_path, estimator=Ridge(), params={"alfa": 2})


def test_raise_policy_names_the_group_and_keeps_the_previous_table(spark, panel_df, tmp_path):
    df, rows, _ = panel_df
    first = train(df, tmp_path, training_run_id="good")
    before = model_table.current(str(tmp_path / "table"))
    first_row = rows[["store", "item"]].iloc[0]
    bad = rows.copy()
    bad.loc[(bad["store"] == first_row["store"]) & (bad["item"] == first_row["item"]), "x0"] = np.nan
    with pytest.raises(GroupFitError, match=rf"group store={first_row['store']}, item={first_row['item']}"):
        train(spark.createDataFrame(bad), tmp_path, failure_policy="raise", training_run_id="bad")
    assert model_table.current(str(tmp_path / "table")) == before
    again = model_table.read(spark, str(tmp_path / "table")).toPandas()
    assert len(again) == 40 and set(again["training_run_id"]) == {"good"} and first.version == before["version"]


def test_record_policy_keeps_training_the_other_groups(spark, panel_df, tmp_path):
    _, rows, _ = panel_df
    first_row = rows[["store", "item"]].iloc[0]
    bad = rows.copy()
    bad.loc[(bad["store"] == first_row["store"]) & (bad["item"] == first_row["item"]), "x0"] = np.nan
    table = train(spark.createDataFrame(bad), tmp_path)
    assert table.counts == {"ok": 39, "failed": 1, "skipped": 0}
    failed = table.read(spark).where("status = 'failed'").toPandas().iloc[0]
    assert "NaN" in failed["error"] and "Traceback" in failed["error"]


def test_per_file_training_one_model_per_gzipped_file(spark, tmp_path):
    rows, _ = make_panel(PanelSpec(n_groups=6, mean_rows=50, n_features=3, seed=5))
    write_gzip_per_group(rows, ("store", "item"), tmp_path / "gz")
    table = train_per_file(spark, str(tmp_path / "gz"), feature_cols=FEATURES, label_col="y",
                           estimator=LinearRegression(), location=str(tmp_path / "files"), holdout_fraction=0.0)
    got = table.read(spark).toPandas().sort_values("source_file")
    assert table.counts["ok"] == 6 and got["source_file"].str.endswith(".csv.gz").all()
    sizes = rows.groupby(["store", "item"]).size().sort_index()
    assert got["n_rows"].tolist() == sizes.tolist()
    # the file model equals a plain fit of that file's rows
    first = rows[(rows["store"] == sizes.index[0][0]) & (rows["item"] == sizes.index[0][1])]
    m = model_bytes.loads(got.iloc[0]["model"], got.iloc[0]["model_sha256"])
    np.testing.assert_allclose(m.coef_, LinearRegression().fit(first[FEATURES], first["y"]).coef_, rtol=1e-6)


def test_an_estimator_class_defined_in_a_notebook_trains(spark, panel_df, tmp_path):
    """A class of ``__main__`` (a notebook cell, a script) reaches the workers by value; plain pickle cannot name it
    there, so its template and its models go through cloudpickle, and they load where the class is not defined."""
    df, rows, _ = panel_df
    notebook_class = type("NotebookRegressor", (LinearRegression,), {"__module__": "__main__"})
    table = train(df, tmp_path, estimator=notebook_class())
    assert table.counts == {"ok": 40, "failed": 0, "skipped": 0}
    row = table.read(spark).limit(1).toPandas().iloc[0]
    model = model_bytes.loads(row["model"], row["model_sha256"])
    assert type(model).__name__ == "NotebookRegressor" and model.predict(rows[FEATURES].head(2)).shape == (2,)
