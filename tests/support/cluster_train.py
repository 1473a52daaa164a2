"""Child process of ``test_cluster.py``: train per group on a Spark standalone cluster.

Usage: ``python tests/support/cluster_train.py MASTER_URL INPUT_PARQUET OUT_LOCATION``

A process can hold only one SparkContext and the test process already holds the local one, so the
cluster driver runs here. The last stdout line is ``RESULT {json}`` with the committed version, the
status counts and what the driver saw of the cluster (master URL, application id, executors).
"""
from __future__ import annotations

import json
import sys

from cluster_util import CLUSTER_CONF
from sklearn.linear_model import LinearRegression

from manymodels.spark.session import get_spark
from manymodels.spark.training import train_per_group

RUN_ID = "cluster-vs-local"


def executors(spark) -> list[str]:
    """Ids of the executors registered with the driver (the driver itself excluded)."""
    ids = spark.sparkContext._jsc.sc().getExecutorIds()  # a Scala Seq, via py4j
    return sorted(str(ids.apply(i)) for i in range(ids.size()))


def main(master: str, input_path: str, location: str) -> dict:
    spark = get_spark(master, app_name="manymodels-cluster-test", conf=CLUSTER_CONF)
    try:
        df = spark.read.parquet(input_path)
        table = train_per_group(df, group_cols=["store", "item"], feature_cols=["x0", "x1", "x2"], label_col="y",
                                estimator=LinearRegression(), training_run_id=RUN_ID, location=location)
        return {"version": table.version, "counts": table.counts, "plan_partitions": table.plan_partitions,
                "master": spark.conf.get("spark.master"), "app_id": spark.sparkContext.applicationId,
                "executors": executors(spark), "input_partitions": df.rdd.getNumPartitions()}
    finally:
        spark.stop()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    result = main(*sys.argv[1:])
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)
