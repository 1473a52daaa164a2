"""Scores filed by date: ``batch_score`` writes ``output_table`` partitioned by ``score_date`` and a run replaces
its own date only, for a folder and for a table of the session's catalog; outputs of the undated layout are refused.
The last test scores with a real registered router and checks the run-id columns."""
from __future__ import annotations

import datetime
import time
import uuid
from types import SimpleNamespace

import pytest
from pyspark.sql import functions as F

from manymodels import jobs
from manymodels.errors import InputError
from manymodels.jobs.scores import SCORES_MARKER
from manymodels.settings import OUTPUT_ROOT_ENV, project_home

pytestmark = pytest.mark.spark
VERSION = SimpleNamespace(name="dated_router", version="4", run_id="0123abcd", tags={"manymodels.training_run_id":
                                                                                     "train-7"})


def fake_scores(df, uri, **kwargs):
    """``score_per_group``'s columns, one row per input row (group "b" has no model)."""
    return df.select("store", F.lit(1.5).alias("prediction"),
                     F.when(F.col("store") == "b", "unknown_group").otherwise("ok").alias("status"),
                     F.lit(None).cast("string").alias("error"), F.lit(f"{VERSION.name}/{VERSION.version}")
                     .alias("model_version"))


@pytest.fixture
def scoring(spark, monkeypatch, tmp_path):
    """``batch_score`` with the registry and the per-group scoring replaced; ``run(n_rows, date, output)``."""
    monkeypatch.setattr("manymodels.api.score_per_group", fake_scores)
    monkeypatch.setattr("manymodels.tracking.configure", lambda **kw: None)
    monkeypatch.setattr("manymodels.jobs.steps.registered_version", lambda uri: VERSION)
    monkeypatch.delenv(OUTPUT_ROOT_ENV, raising=False)

    def run(n_rows: int, date: str, output: str, **kwargs):
        source = tmp_path / f"input_{uuid.uuid4().hex[:6]}"
        rows = [("a" if i % 3 else "b", float(i)) for i in range(n_rows)]
        spark.createDataFrame(rows, "store string, x double").write.parquet(str(source))
        return jobs.batch_score(spark, input_path=str(source), output_table=output, score_date=date, **kwargs)
    return run


def per_date(frame) -> dict:
    return {str(r["score_date"]): r["count"] for r in frame.groupBy("score_date").count().collect()}


@pytest.fixture(params=["folder", "table"])
def output(request, spark):
    if request.param == "folder":
        yield str(project_home() / "scores" / f"dated_{uuid.uuid4().hex[:8]}")
    else:
        name = f"dated_scores_{uuid.uuid4().hex[:8]}"
        yield name
        spark.sql(f"DROP TABLE IF EXISTS {name}")


def read(spark, output: str):
    return spark.read.parquet(output) if "/" in output else spark.read.table(output)


def test_a_rerun_replaces_its_date_and_no_other(spark, scoring, output):
    first = scoring(6, "2026-03-01", output)
    assert (first.rows, first.statuses, first.score_date) == (6, {"ok": 4, "unknown_group": 2}, "2026-03-01")
    kept = read(spark, output).where("score_date = '2026-03-01'").select("scored_at").first()[0]
    second = scoring(9, "2026-03-02", output)
    assert second.rows == 9 and per_date(read(spark, output)) == {"2026-03-01": 6, "2026-03-02": 9}
    rerun = scoring(3, "2026-03-01", output)  # fewer rows: replaced, not appended to
    frame = read(spark, output)
    assert rerun.rows == 3 and per_date(frame) == {"2026-03-01": 3, "2026-03-02": 9}
    other = frame.where("score_date = '2026-03-02'").select("scored_at").distinct().collect()
    assert len(other) == 1 and other[0][0] != kept  # the other date's rows are the second run's, untouched
    assert frame.where("score_date = '2026-03-01'").select("scored_at").first()[0] > kept
    empty = scoring(0, "2026-03-02", output)  # no row scored for a date: its earlier scores are gone too
    assert empty.rows == 0 and per_date(read(spark, output)) == {"2026-03-01": 3}
    if "/" in output:
        assert (project_home() / "scores" / output.rsplit("/", 1)[-1] / SCORES_MARKER).is_file()
        assert sorted(p.name for p in (project_home() / "scores" / output.rsplit("/", 1)[-1]).iterdir()
                      if not p.name.startswith((".", "_"))) == ["score_date=2026-03-01"]
    else:
        parts = {c.name: c.isPartition for c in spark.catalog.listColumns(output)}
        assert parts["score_date"] and sum(parts.values()) == 1


def test_the_scores_carry_the_version_its_runs_the_time_and_the_date(spark, scoring, output):
    before = time.time()
    scored = scoring(4, "", output)  # empty: today in UTC
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert scored.score_date == today and "dated_router/4 (training run train-7)" in scored.summary()
    row = read(spark, output).select("model_version", "training_run_id", "mlflow_run_id",
                                     F.unix_timestamp("scored_at").alias("epoch"), "score_date").first()
    assert (row["model_version"], row["training_run_id"], row["mlflow_run_id"]) == ("dated_router/4", "train-7",
                                                                                    "0123abcd")
    assert before - 2 <= row["epoch"] <= time.time() + 2 and str(row["score_date"]) == today
    types = dict(read(spark, output).dtypes)
    assert types["scored_at"] == "timestamp" and types["score_date"] == "date"


def test_an_undated_folder_of_the_old_scoring_job_is_refused_and_kept(spark, scoring):
    old = project_home() / "scores" / f"undated_{uuid.uuid4().hex[:8]}"
    spark.createDataFrame([("a", 1.0)], "store string, prediction double").write.parquet(str(old))
    (old / SCORES_MARKER).write_text('{"model_version": "m/1", "rows": 1, "written_at": "2026-01-01T00:00:00Z"}')
    with pytest.raises(InputError, match=rf"output_table='{old}'.*not only score_date partitions.*new "
                                         rf"output_table, or move the old scores away.*mv {old} {old}_undated"):
        scoring(3, "2026-03-01", str(old))
    assert spark.read.parquet(str(old)).count() == 1


def test_an_undated_table_is_refused_and_kept(spark, scoring):
    name = f"undated_scores_{uuid.uuid4().hex[:8]}"
    spark.createDataFrame([("a", 1.0)], "store string, prediction double").write.saveAsTable(name)
    try:
        with pytest.raises(InputError, match=rf"output_table='{name}' is partitioned by nothing.*new output_table, "
                                             r"or rename the old table first"):
            scoring(3, "2026-03-01", name)
        assert spark.read.table(name).count() == 1
    finally:
        spark.sql(f"DROP TABLE IF EXISTS {name}")


def test_a_dated_output_with_other_columns_is_refused(spark, scoring, output, monkeypatch):
    scoring(3, "2026-03-01", output)
    monkeypatch.setattr("manymodels.api.score_per_group",  # the same scores, with the prediction column renamed
                        lambda df, uri, **kw: fake_scores(df, uri).withColumnRenamed("prediction", "guess"))
    with pytest.raises(InputError, match=r"other columns than these: they lack \['prediction'\] and add "
                                         r"\['guess'\]"):
        scoring(3, "2026-03-02", output)
    assert per_date(read(spark, output)) == {"2026-03-01": 3}


def test_a_column_named_like_an_added_one_is_refused_before_the_write(spark, scoring, monkeypatch):
    out = str(project_home() / "scores" / f"clash_{uuid.uuid4().hex[:8]}")
    monkeypatch.setattr("manymodels.api.score_per_group",
                        lambda df, uri, **kw: fake_scores(df, uri).withColumn("score_date", F.lit("x")))
    with pytest.raises(InputError, match=r"two columns named \['score_date'\].*passthrough_cols"):
        scoring(3, "2026-03-01", out)
    assert not (project_home() / "scores" / out.rsplit("/", 1)[-1]).exists()


# ---------------------------------------------------------------- with a registered router

def test_scoring_with_the_registered_router_files_its_run_ids(spark, mlflow_ctx, small_panel, tmp_path, monkeypatch):
    from sklearn.linear_model import LinearRegression

    from manymodels import tracking
    from manymodels.spark.training import train_per_group

    monkeypatch.delenv(OUTPUT_ROOT_ENV, raising=False)
    _, rows, _ = small_panel
    source = tmp_path / "panel"
    spark.createDataFrame(rows).write.parquet(str(source))
    table = train_per_group(spark.read.parquet(str(source)), group_cols=["store", "item"],
                            feature_cols=["x0", "x1", "x2"], label_col="y", estimator=LinearRegression(),
                            training_run_id="dated-1", location=str(tmp_path / "table"))
    logged = tracking.log_training(spark, table, mlflow_ctx, name="dated_scores_router")
    out = str(project_home() / "scores" / "dated_registered")
    scored = jobs.batch_score(spark, input_path=str(source), model_name="dated_scores_router",
                              output_table=out, score_date="2026-04-30")
    assert scored.rows == len(rows) and scored.statuses == {"ok": len(rows)}
    assert (scored.training_run_id, scored.mlflow_run_id) == ("dated-1", logged.run_id)
    written = spark.read.parquet(out)
    assert written.select("model_version", "training_run_id", "mlflow_run_id", "score_date").distinct().collect() == \
        [(f"dated_scores_router/{logged.version}", "dated-1", logged.run_id, datetime.date(2026, 4, 30))]
