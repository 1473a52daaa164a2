"""Per-group training on a real Spark standalone cluster (a master and two 1-core workers on 127.0.0.1)
gives the same model table as the shared local session.

The cluster's driver runs in a child process (``cluster_train.py``): this process already holds the
local SparkContext. The master and the workers are started from the installed pyspark and stopped by
process group in the fixture's teardown, also when the test fails.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cluster_util import Cluster, cluster, spark_env, stop_group, wait_for  # noqa: F401 - cluster: a fixture
from sklearn.linear_model import LinearRegression

from manymodels.core.panel import make_panel
from manymodels.core.schema import METRIC_COLUMNS
from manymodels.core.spec import PanelSpec
from manymodels.spark.training import train_per_group

pytestmark = pytest.mark.cluster

HERE = Path(__file__).resolve().parents[1] / "support"  # the child-process scripts
KEYS = ["store", "item"]
FEATURES = ["x0", "x1", "x2"]
RUN_ID = "cluster-vs-local"
N_WORKERS = 2
TRAIN_TIMEOUT = 600.0


# ---------------------------------------------------------------- data and the two trainings

@pytest.fixture(scope="module")
def panel_parquet(tmp_path_factory) -> Path:
    # Four files, rows dealt out in turn: each group's rows reach its task from several input
    # partitions in shuffle-fetch order, which differs between the cluster and local mode. The
    # model bytes must not depend on that order.
    rows, _ = make_panel(PanelSpec(n_groups=200, mean_rows=60, n_features=3, seed=21))
    path = tmp_path_factory.mktemp("cluster_input") / "panel"
    path.mkdir()
    for i in range(4):
        rows.iloc[i::4].to_parquet(path / f"part-{i}.parquet", index=False)
    return path


def run_cluster_training(cluster: Cluster, input_path: Path, location: Path, home: Path) -> dict:  # noqa: F811 - takes the cluster fixture's value
    """Run ``cluster_train.py`` in its own process group; return its ``RESULT`` JSON."""
    env = dict(spark_env(), MANYMODELS_HOME=str(home))
    cmd = [sys.executable, str(HERE / "cluster_train.py"), cluster.url, str(input_path), str(location)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TRAIN_TIMEOUT)
    finally:
        stop_group(proc)  # no-op after a normal exit; kills the driver JVM too after a timeout
    results = [ln[len("RESULT "):] for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and results, (
        f"cluster training failed (exit {proc.returncode})\nstdout:\n{out[-3000:]}\nstderr:\n{err[-6000:]}"
        f"\n{cluster.log_tails()}")
    return json.loads(results[-1])


def by_key(pdf: pd.DataFrame) -> pd.DataFrame:
    assert not pdf.duplicated(KEYS).any(), "more than one row for a group"
    return pdf.set_index(KEYS).sort_index()


# ---------------------------------------------------------------- the test

def test_standalone_cluster_gives_the_same_model_table_as_local(spark, cluster, panel_parquet, tmp_path):  # noqa: F811 - cluster: a fixture imported from cluster_util
    rows = pd.read_parquet(panel_parquet)
    n_groups = len(rows.drop_duplicates(KEYS))

    result = run_cluster_training(cluster, panel_parquet, tmp_path / "cluster_table", tmp_path / "home")
    local = train_per_group(spark.read.parquet(str(panel_parquet)), group_cols=KEYS, feature_cols=FEATURES,
                            label_col="y", estimator=LinearRegression(), training_run_id=RUN_ID,
                            location=str(tmp_path / "local_table"))

    # The cluster run really ran on the standalone cluster, with one executor per worker.
    assert result["master"] == cluster.url
    assert len(result["executors"]) == N_WORKERS, result
    wait_for(lambda: result["app_id"] in cluster.completed_apps(), 30, f"{result['app_id']} among the completed apps")
    for work in cluster.work_dirs:  # each worker launched an executor for this application
        assert [p.name for p in (work / result["app_id"]).iterdir()], f"no executor of the app in {work}"

    # Same counts, same keys, one row per group, same outcome and identical model bytes per group.
    assert result["counts"] == local.counts == {"ok": n_groups, "failed": 0, "skipped": 0}
    got = by_key(pd.read_parquet(result["version"]))
    want = by_key(local.read(spark).toPandas())
    assert len(got) == len(want) == n_groups
    assert got.index.equals(want.index)
    assert got["training_run_id"].eq(RUN_ID).all() and want["training_run_id"].eq(RUN_ID).all()
    assert got["task_attempt"].str.contains("attempt=").all()
    pd.testing.assert_series_equal(got["status"], want["status"])
    for col in ("n_rows", "n_train", "n_holdout", "seed"):
        pd.testing.assert_series_equal(got[col], want[col], check_dtype=False)
    mismatched = got.index[got["model_sha256"] != want["model_sha256"]]
    assert mismatched.empty, f"{len(mismatched)} group(s) with different model bytes, e.g. {list(mismatched[:5])}"
    for col in METRIC_COLUMNS:
        np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float), rtol=1e-9, atol=1e-12,
                                   equal_nan=True, err_msg=col)
