"""Child process of test_concurrent_runs: one training run through the job entry point
(``jobs.train_and_register``) against the tracking server named by MLFLOW_TRACKING_URI.

It starts its own local[1] Spark, prints ``READY`` and waits for a line on stdin (the parent's start signal,
so that both runs start together), then trains, logs and registers, and prints one ``RESULT <json>`` line
with wall-clock timestamps of its phases and what it registered.
"""
from __future__ import annotations

import json
import sys
import time


def main() -> int:
    args = json.loads(sys.argv[1])
    from manymodels import jobs
    from manymodels.spark.session import get_spark

    spark = get_spark("local[1]", app_name=f"concurrent-{args['run_id']}", conf={
        "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "2", "spark.log.level": "ERROR"})
    spark.range(1).count()  # the JVM and a Python-free job warmed up before the start signal
    print("READY", flush=True)
    sys.stdin.readline()
    start = time.time()
    result = jobs.train_and_register(
        spark, args["input"], group_cols=["store", "item"], feature_cols=["x0", "x1", "x2"], label_col="y",
        estimator="sklearn.linear_model.LinearRegression", model_name=args["model_name"], alias=args["alias"],
        experiment=args["experiment"], location=args["table"], training_run_id=args["run_id"])
    end = time.time()
    logged, timings = result.logged, result.timings
    log_start = end - timings["mlflow_s"]
    print("RESULT " + json.dumps({
        "run_id": args["run_id"], "mlflow_run_id": logged.run_id, "version": logged.version,
        "reused": logged.reused, "table_version": result.table.version, "counts": result.table.counts,
        "start": start, "end": end, "train": [log_start - timings["train_s"], log_start], "log": [log_start, end],
    }), flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
