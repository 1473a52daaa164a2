"""The packed path (bin-packed partitions, many groups per Python call) against the naive per-group path,
and the memory guard, on the shared local[2] session."""
import os

import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from manymodels.core.fitting import fit_group, rows_to_frame
from manymodels.core.memory import row_bytes
from manymodels.core.panel import make_panel
from manymodels.core.spec import PanelSpec
from manymodels.errors import InputError
from manymodels.spark.training import _result_ddl, make_spec, train_per_group
from manymodels.storage import model_table

pytestmark = pytest.mark.spark
KEYS = ["store", "item"]
FEATURES = ["x0", "x1", "x2"]
VOLATILE = ["fit_seconds", "task_attempt"]  # timings and which task ran a group differ by design
SPARK_ADDED = ["data_fingerprint", "spec_fingerprint"]  # set by the Spark layer around the UDF, not by the pure core


@pytest.fixture(scope="module")
def skewed(spark):
    rows, truth = make_panel(PanelSpec(n_groups=150, mean_rows=60, n_features=3, size_distribution="zipf",
                                       zipf_exponent=1.3, seed=17))
    sizes = truth["n_rows"]
    assert sizes.max() >= 20 * sizes.median()  # a real skew: one group dwarfs the typical one
    return spark.createDataFrame(rows), rows


def naive(df, spec):
    """The common recipe: one applyInPandas call per group, each fitting with the same pure core."""
    def one(key, pdf):
        return rows_to_frame([fit_group(key, pdf, spec=spec)], spec.group_cols)
    return df.groupBy(*spec.group_cols).applyInPandas(one, schema=_result_ddl(df, spec)).toPandas()


def canonical(frame):
    return frame.drop(columns=VOLATILE + SPARK_ADDED).sort_values(KEYS).reset_index(drop=True)


@pytest.mark.parametrize("aqe", ["true", "false"])
def test_packed_path_returns_exactly_the_naive_model_table_on_a_skewed_panel(spark, skewed, tmp_path, aqe):
    df, _ = skewed
    settings = dict(group_cols=KEYS, feature_cols=FEATURES, label_col="y", estimator=Ridge(alpha=0.5),
                    training_run_id="packed-vs-naive", holdout_fraction=0.25)
    old = spark.conf.get("spark.sql.adaptive.enabled")
    spark.conf.set("spark.sql.adaptive.enabled", aqe)
    try:
        table = train_per_group(df, location=str(tmp_path / "t"), **settings)
        packed = canonical(table.read(spark).toPandas())
        expected = canonical(naive(df, make_spec(df, **settings)))
    finally:
        spark.conf.set("spark.sql.adaptive.enabled", old)
    assert table.plan_partitions >= 2 and len(packed) == 150 and table.counts["ok"] == 150
    pd.testing.assert_frame_equal(packed, expected, check_dtype=False)
    assert packed["model_sha256"].tolist() == expected["model_sha256"].tolist()


def big_group(rows):
    sizes = rows.groupby(KEYS).size().sort_values(ascending=False)
    return sizes.index[0], int(sizes.iloc[0]), int(sizes.iloc[1])


def test_memory_guard_refuses_an_oversize_group_by_name_before_any_write(spark, skewed, tmp_path):
    df, rows = skewed
    (store, item), n_big, n_second = big_group(rows)
    per_row = row_bytes(dict(df.dtypes), KEYS, FEATURES, "y")
    location = str(tmp_path / "t")
    first = train_per_group(df, group_cols=KEYS, feature_cols=FEATURES, label_col="y", estimator=Ridge(),
                            location=location)
    with pytest.raises(InputError) as err:
        train_per_group(df, group_cols=KEYS, feature_cols=FEATURES, label_col="y", estimator=Ridge(),
                        location=location, max_group_bytes=per_row * (n_second + n_big) // 2)
    msg = str(err.value)
    assert f"store={store}, item={item} ({n_big:,} rows" in msg and "1 group(s) too large" in msg
    assert "max_group_bytes=" in msg and "oversize='subsample'" in msg
    assert model_table.current(location)["version"] == first.version  # the committed table is untouched
    assert len(os.listdir(os.path.join(location, "_versions"))) == 1


def test_oversize_subsample_is_seeded_and_recorded(spark, skewed, tmp_path):
    df, rows = skewed
    (store, item), n_big, n_second = big_group(rows)
    per_row = row_bytes(dict(df.dtypes), KEYS, FEATURES, "y")
    cap = (n_second + n_big) // 2
    runs = [train_per_group(df, group_cols=KEYS, feature_cols=FEATURES, label_col="y", estimator=Ridge(),
                            location=str(tmp_path / f"t{i}"), max_group_bytes=per_row * cap, oversize="subsample",
                            training_run_id="sub").read(spark).toPandas().sort_values(KEYS).reset_index(drop=True)
            for i in range(2)]
    a, b = runs
    big = a[(a["store"] == store) & (a["item"] == item)].iloc[0]
    assert big["n_rows_input"] == n_big and 0.8 * cap < big["n_rows"] < 1.2 * cap  # sampled to about the cap
    others = a.drop(index=big.name)
    assert (others["n_rows"] == others["n_rows_input"]).all() and (a["status"] == "ok").all()
    assert a["model_sha256"].tolist() == b["model_sha256"].tolist()  # the sample is seeded, not random


def test_progress_lines_count_groups_from_spark_task_counts(spark, skewed, tmp_path, caplog):
    import logging

    from manymodels.spark.progress import Progress

    df, _ = skewed
    spec = make_spec(df, group_cols=KEYS, feature_cols=FEATURES, label_col="y", estimator=Ridge())
    from manymodels.spark.training import build_model_table

    table, task_groups = build_model_table(df, spec)
    with caplog.at_level(logging.INFO, logger="manymodels"):
        with Progress(spark, "training t", task_groups, interval=1e-3, bar=False) as progress:
            table.write.mode("overwrite").parquet(str(tmp_path / "p"))
    lines = [r.getMessage() for r in caplog.records if r.name == "manymodels.progress"]
    assert lines[0] == f"manymodels: training t: 150 groups in {len(task_groups)} tasks"
    assert lines[-1].startswith(f"manymodels: training t: {len(task_groups)}/{len(task_groups)} tasks, >= 150 of 150")
    assert progress.best == len(task_groups) and progress.value == 150
    # the status tracker was read while the fitting stage ran (the job takes far longer than one 1 ms poll)
    assert any(" tasks, >= " in ln for ln in lines[1:-1]), lines
