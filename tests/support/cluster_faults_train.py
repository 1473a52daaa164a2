"""Child driver of ``test_cluster_faults.py``: train per group on a standalone cluster, then log to MLflow.

Usage: ``python tests/support/cluster_faults_train.py CONFIG_JSON_PATH``

The config names the master, the input Parquet, the model-table location, the training run id, the
fault-injection mode and its files (see ``Gate``), and extra Spark settings (e.g. speculation). The
last stdout line is ``RESULT {json}``: the committed version, status counts, the MLflow run and
registered version, and timings.

Faults are injected from the estimator, not from the product code: ``Gate`` wraps the real
estimator and, on the first group of a task attempt, writes a marker file describing the attempt
(task id, partition, attempt number, the Python worker's pid and process group) and may hold that
task until a file appears. The test process watches the markers and kills a worker or a Python
worker while tasks are held inside the training stage. After fitting, the ``Gate`` instance turns
into the fitted inner estimator itself (same class, same state), so the model bytes are exactly
those of the plain estimator. Executors import this module by name (the tests folder is put on
their PYTHONPATH), so the class is found by name on every worker instead of being shipped by value
from this script's ``__main__``.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from cluster_train import CLUSTER_CONF as BASE_CONF  # this folder: a script's own folder is on sys.path
from sklearn.base import BaseEstimator, RegressorMixin, clone

HERE = Path(__file__).resolve().parent
KEYS = ["store", "item"]
FEATURES = ["x0", "x1", "x2"]
CLUSTER_CONF = {
    **BASE_CONF,  # cluster_train.py's: driver on 127.0.0.1, no UI, 1g executors, parallelism 2
    "spark.locality.wait": "0s",           # no waiting for a preferred executor: faster retries
    "spark.shuffle.io.maxRetries": "1",     # a fetch from a dead executor fails fast and reruns the map stage
    "spark.shuffle.io.retryWait": "1s",
    "spark.executorEnv.PYTHONPATH": str(HERE),  # executors import ``cluster_faults_train.Gate``
}

_SEEN: set[int] = set()  # task attempts of this Python worker that already passed the gate


class Gate(RegressorMixin, BaseEstimator):
    """Fits ``estimator``; on the first group of each task attempt, records the attempt and may hold it.

    ``mode="hold"``: attempt 0 of every task waits until ``release`` exists (attempts started after the
    release, e.g. of a resubmitted stage, do not wait).
    ``mode="slow"``: attempt 0 of partition ``slow_partition`` waits until ``release`` exists, so a
    speculative copy (attempt 1) wins. Waits end after ``timeout`` seconds in any case.
    """

    def __init__(self, estimator=None, markers: str = "", release: str = "", mode: str = "hold",
                 slow_partition: int = 0, timeout: float = 180.0):
        self.estimator = estimator
        self.markers = markers
        self.release = release
        self.mode = mode
        self.slow_partition = slow_partition
        self.timeout = timeout

    def fit(self, X, y):
        self._gate()
        inner = clone(self.estimator).fit(X, y)
        # Become the fitted inner estimator: its class and state, so it pickles to the same bytes.
        self.__dict__.clear()
        self.__dict__.update(inner.__dict__)
        self.__class__ = type(inner)
        return self

    def _gate(self) -> None:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx is None or ctx.taskAttemptId() in _SEEN:
            return
        _SEEN.add(ctx.taskAttemptId())
        attempt = {"tid": ctx.taskAttemptId(), "stage": ctx.stageId(),
                   "partition": ctx.partitionId(), "attempt": ctx.attemptNumber(), "pid": os.getpid(),
                   "pgid": os.getpgid(0), "host": os.environ.get("SPARK_LOCAL_IP", ""), "time": time.time()}
        if self.mode == "hold":
            hold = attempt["attempt"] == 0
        else:
            hold = attempt["attempt"] == 0 and attempt["partition"] == self.slow_partition
        hold = hold and not os.path.exists(self.release)
        _write_json(Path(self.markers) / f"{'held' if hold else 'ran'}-{attempt['tid']}.json", attempt)
        if hold:
            deadline = time.monotonic() + self.timeout
            pause = threading.Event()
            while not os.path.exists(self.release) and time.monotonic() < deadline:
                pause.wait(0.1)

    def predict(self, X):  # only reached if fit failed half-way; the fitted object is the inner estimator
        raise RuntimeError("Gate.predict called before fit")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)  # the test never reads a half-written marker


def executors(spark) -> list[str]:
    ids = spark.sparkContext._jsc.sc().getExecutorIds()  # a Scala Seq, via py4j
    return sorted(str(ids.apply(i)) for i in range(ids.size()))


def main(config: dict) -> dict:
    # The class as ``cluster_faults_train.Gate`` (not ``__main__.Gate``): importable on the executors.
    from cluster_faults_train import Gate as ImportableGate
    from sklearn.linear_model import LinearRegression

    from manymodels import tracking
    from manymodels.spark.session import get_spark
    from manymodels.spark.training import train_per_group

    estimator = ImportableGate(LinearRegression(), markers=config["markers"], release=config["release"],
                               mode=config["mode"], slow_partition=config.get("slow_partition", 0),
                               timeout=config.get("timeout", 180.0))
    start = time.perf_counter()
    spark = get_spark(config["master"], app_name=f"manymodels-faults-{config['run_id']}",
                      conf={**CLUSTER_CONF, **config.get("conf", {})})
    spark_seconds = time.perf_counter() - start
    try:
        start, train_started = time.perf_counter(), time.time()
        table = train_per_group(spark.read.parquet(config["input"]), group_cols=KEYS, feature_cols=FEATURES,
                                label_col="y", estimator=estimator, training_run_id=config["run_id"],
                                location=config["location"], progress=False)
        train_seconds = time.perf_counter() - start
        app_id, seen = spark.sparkContext.applicationId, executors(spark)
        start = time.perf_counter()
        ctx = tracking.configure(experiment="manymodels-cluster-faults")
        logged = tracking.log_training(spark, table, ctx)
        log_seconds = time.perf_counter() - start
        return {"version": table.version, "counts": table.counts, "plan_partitions": table.plan_partitions,
                "app_id": app_id, "executors": seen, "tracking_uri": ctx.tracking_uri,
                "mlflow_run_id": logged.run_id, "model_name": logged.model_name,
                "registered_version": logged.version, "spark_seconds": round(spark_seconds, 2),
                "train_started": train_started, "train_seconds": round(train_seconds, 2),
                "log_seconds": round(log_seconds, 2)}
    finally:
        spark.stop()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    result = main(json.loads(Path(sys.argv[1]).read_text()))
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)
