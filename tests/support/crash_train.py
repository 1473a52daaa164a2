"""Child process of ``test_driver_crash.py``: one training run (train, log, register, commit, alias) that may
kill its own process at a chosen point, as a lost driver would stop.

Usage: ``python tests/support/crash_train.py INPUT_PARQUET LOCATION TRAINING_RUN_ID CRASH_POINT``

``CRASH_POINT``: ``none``; ``logging`` (SIGKILL when MLflow starts uploading the group models, after the
training pass); ``registered`` (SIGKILL right after the router version is registered, before the
model table is committed and the alias moves). MLflow is the sqlite store under ``MANYMODELS_HOME``.
The last stdout line is ``RESULT {json}``.
"""
from __future__ import annotations

import json
import os
import signal
import sys

import mlflow

from manymodels.jobs.steps import train_and_register
from manymodels.spark.session import get_spark


def die_after(module, name: str, *, before: bool) -> None:
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        if before:
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(module, name, wrapper)


def main(input_path: str, location: str, run_id: str, crash: str) -> dict:
    if crash == "logging":
        die_after(mlflow, "log_artifacts", before=True)
    elif crash == "registered":
        die_after(mlflow, "register_model", before=False)
    elif crash != "none":
        sys.exit(f"unknown crash point {crash!r}")
    spark = get_spark("local[2]", app_name="manymodels-crash-test",
                      conf={"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"})
    result = train_and_register(spark, input_path, group_cols=["store", "item"], feature_cols=["x0", "x1", "x2"],
                                label_col="y", estimator="sklearn.linear_model.Ridge", model_name="crash_model",
                                location=location, fmt="parquet", training_run_id=run_id, experiment="crash")
    return {"version": result.table.version, "run_id": result.logged.run_id, "model_version": result.logged.version,
            "reused": result.logged.reused, "counts": result.table.counts}


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    print("RESULT " + json.dumps(main(*sys.argv[1:])), flush=True)
