"""Child driver of ``tests/cluster/test_hidden_driver_folder.py``: the jobs' entry points, with the parameters the
bundle passes, on a standalone cluster whose worker cannot see this project's folder (nor the driver's
``$MANYMODELS_HOME`` inside it). Everything the executors read or write is in ``volume`` (a folder both sides see,
as a Unity Catalog Volume is on Databricks).

Usage: ``python tests/support/hidden_folder_job.py CONFIG_JSON``; config keys: ``master``, ``repo`` (the hidden
folder), ``volume``. The last stdout line is ``RESULT {json}``: what the executors saw, and per step its counts,
where it staged, and (for the negative controls) how it failed.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import cluster_util
import pandas as pd

KEYS = ["store", "item"]
FEATURES = ["x0", "x1", "x2", "x3", "x4"]
EXPERIMENT = "hidden-driver-folder"
CLUSTER_CONF = {**cluster_util.CLUSTER_CONF,
                "spark.sql.shuffle.partitions": "4",
                "spark.task.maxFailures": "2"}  # a negative control fails fast


class Captured(logging.Handler):
    """The package's warnings, kept to be reported."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def executor_view(spark, repo: str, home: str) -> list[dict]:
    """What the Python workers of the executors see: whether the project folder and the driver's home exist there,
    which manymodels and interpreter they run and their working directory (one row per partition)."""

    def body(batches):  # defined in __main__: pickled by value, needs nothing from this folder on the worker
        import os
        import sys

        import pandas as pd

        import manymodels

        for _ in batches:
            yield pd.DataFrame({"repo_src_visible": [os.path.exists(os.path.join(repo, "src", "manymodels"))],
                                "home_visible": [os.path.exists(home)], "manymodels": [manymodels.__file__],
                                "python": [sys.executable], "prefix": [sys.prefix], "cwd": [os.getcwd()]})

    schema = ("repo_src_visible boolean, home_visible boolean, manymodels string, python string, prefix string, "
              "cwd string")
    return spark.range(0, 4, 1, 2).mapInPandas(body, schema).toPandas().to_dict("records")


def read_scores(folder: Path) -> dict:
    """Status counts and rows of a scores folder (Parquet, any partitioning), read on the driver."""
    scores = pd.read_parquet(folder)
    errors = scores.loc[scores["status"] != "ok", "error"].dropna().astype(str).head(3).tolist() \
        if "error" in scores.columns else []
    return {"rows": len(scores), "status": scores["status"].value_counts().to_dict(), "errors": errors}


def files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def negative(run, output: Path) -> dict:
    """A run expected not to score: its exception, or the statuses it wrote."""
    try:
        run()
    except BaseException as exc:  # noqa: BLE001 - SystemExit from the CLI included: reported, judged by the test
        return {"raised": f"{type(exc).__name__}: {str(exc)[:2000]}"}
    return {"raised": None, **read_scores(output)}


def main(config: dict) -> dict:
    from manymodels import api
    from manymodels.jobs import cli, steps
    from manymodels.spark.session import get_spark
    from manymodels.studies import tuning

    master, repo, volume = config["master"], config["repo"], Path(config["volume"])
    home = os.environ["MANYMODELS_HOME"]  # inside the hidden folder: only the driver (MLflow) may use it
    captured = Captured()
    logging.getLogger("manymodels").addHandler(captured)
    staging, panel = volume / "staging", volume / "panel"
    out, timings = {"worker_python": os.environ.get("PYSPARK_PYTHON")}, {}

    def run_cli(argv):  # a positive step: the command must succeed
        code = cli.main(argv)
        if code != 0:
            raise SystemExit(f"manymodels {' '.join(argv)} exited with {code}")

    def step(name, fn):
        start = time.perf_counter()
        value = fn()
        timings[name] = round(time.perf_counter() - start, 1)
        return value

    spark = step("session", lambda: get_spark(master, app_name="manymodels-hidden-folder", conf=CLUSTER_CONF))
    out["master"] = spark.conf.get("spark.master")
    out["executors"] = step("probe", lambda: executor_view(spark, repo, home))

    # the nightly job's tasks, as the bundle's wheel tasks call them (python_wheel_task -> manymodels ...)
    step("prepare", lambda: run_cli(["prepare", "--n_groups=40", "--mean_rows=40", "--size_distribution=poisson",
                                      "--layout=parquet", f"--output_dir={panel}", "--seed=7"]))
    source = str(panel / "parquet")
    out["input_rows"] = len(pd.read_parquet(source))
    step("train", lambda: run_cli([
        "train", f"--input_path={source}", "--group_cols=store,item", f"--feature_cols={','.join(FEATURES)}",
        "--label_col=y", "--estimator=sklearn.linear_model.LinearRegression", "--estimator_params={}",
        "--model_name=hidden_router", "--alias=champion", f"--experiment={EXPERIMENT}",
        f"--model_table={volume / 'model_table'}", "--failure_policy=record", "--retrain=all",
        "--training_run_id=hidden-folder-train", f"--master={master}"]))
    step("score", lambda: run_cli([
        "score", f"--input_path={source}", "--model_name=hidden_router", "--alias=champion",
        f"--output_table={volume / 'scores'}", "--passthrough_cols=y", f"--experiment={EXPERIMENT}",
        "--shuffle=true", f"--staging_dir={staging}", f"--master={master}"]))
    out["score"] = read_scores(volume / "scores")
    out["staged_models"] = files(staging / "models")

    # the weekly tuning job's task (notebook 03 / manymodels tune): a global search registers one model ...
    step("tune_global", lambda: run_cli([
        "tune", f"--input_path={source}", "--label_col=y", f"--feature_cols={','.join(FEATURES)}",
        "--estimator=sklearn.linear_model.Ridge", '--param_grid={"alpha": [0.1, 1.0]}', "--cv=3", "--scoring=r2",
        "--model_name=hidden_tuned", "--alias=champion", f"--experiment={EXPERIMENT}", f"--staging_dir={staging}",
        "--compare=false", f"--master={master}"]))

    def score_single():  # ... which scores every row with that one registered model
        scored = api.score_single(spark.read.parquet(source), "models:/hidden_tuned@champion", feature_cols=FEATURES)
        return {str(r["status"]): int(r["count"]) for r in scored.groupBy("status").count().collect()}

    out["score_single"] = step("score_single", score_single)

    # ... and a per-group search: tune()'s own arguments (the CLI has no model-table option for tune, and its
    # default model table is under the driver's $MANYMODELS_HOME, which these executors cannot write)
    report = step("tune_per_group", lambda: tuning.tune(
        spark, input_path=source, label_col="y", feature_cols=",".join(FEATURES),
        estimator="sklearn.linear_model.Ridge", param_grid='{"alpha": [0.1, 1.0]}', cv="3", scoring="r2",
        group_cols="store,item", model_name="hidden_group_tuned", alias="champion", experiment=EXPERIMENT,
        staging_dir=str(staging), compare="false", location=str(volume / "tuned_table")))
    out["tune_per_group"] = {"counts": report.result.table.counts, "n_groups": report.result.table.n_groups,
                             "best_groups": len(report.result.best)}
    out["search_staging"] = sorted(str(p) for p in (staging / "search").glob("*")) \
        if (staging / "search").exists() else []
    out["search_leftovers"] = files(staging / "search")
    out["home_staging_before_negatives"] = files(Path(home) / "staging")
    out["warnings_before_negatives"] = list(captured.messages)

    # negative controls: a staging folder inside the hidden project folder, given explicitly and by default
    inside = Path(home) / "driver_local_staging"
    out["negative_explicit"] = step("negative_explicit", lambda: negative(lambda: steps.batch_score(
        spark, input_path=source, model_name="hidden_router", alias="champion",
        output_table=str(volume / "neg_explicit"), experiment=EXPERIMENT, staging_dir=str(inside)),
        volume / "neg_explicit"))
    os.environ.pop("MANYMODELS_STAGING", None)
    before = len(captured.messages)
    out["negative_default"] = step("negative_default", lambda: negative(lambda: cli.main([
        "score", f"--input_path={source}", "--model_name=hidden_router", "--alias=champion",
        f"--output_table={volume / 'neg_default'}", f"--experiment={EXPERIMENT}", f"--master={master}"]),
        volume / "neg_default"))
    out["negative_default"]["warnings"] = captured.messages[before:]
    out["negative_staged"] = {"explicit": files(inside), "default": files(Path(home) / "staging")}
    out["timings"] = timings
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        result = main(json.loads(Path(sys.argv[1]).read_text()))
    finally:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()
    print("RESULT " + json.dumps(result, sort_keys=True, default=str), flush=True)
