"""Per-group training on a real Spark standalone cluster (a master and two 1-core workers on 127.0.0.1)
gives the same model table as the shared local session.

The cluster's driver runs in a child process (``cluster_train.py``): this process already holds the
local SparkContext. The master and the workers are started from the installed pyspark and stopped by
process group in the fixture's teardown, also when the test fails.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from manymodels.config import PanelSpec
from manymodels.data import make_panel
from manymodels.schemas import METRIC_COLUMNS
from manymodels.training import train_per_group

pytestmark = pytest.mark.cluster

HERE = Path(__file__).resolve().parent
KEYS = ["store", "item"]
FEATURES = ["x0", "x1", "x2"]
RUN_ID = "cluster-vs-local"
N_WORKERS = 2
START_TIMEOUT = 120.0
TRAIN_TIMEOUT = 600.0
STOP_TIMEOUT = 30.0


# ---------------------------------------------------------------- small helpers

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float = 0.5):
    """Poll ``condition()`` until it returns a truthy value (returned) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    last_error = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except (OSError, ValueError) as exc:  # not ready yet: connection refused, partial JSON
            last_error = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s (last error: {last_error!r})")
        pause.wait(interval)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def stop_group(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the process group started with ``proc`` (its own session), SIGKILL it after ``timeout``."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:  # also children left behind (e.g. an executor of a worker), and a leader that ignored SIGTERM
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout)


def spark_env() -> dict:
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    for name in ("SPARK_REMOTE", "MANYMODELS_SPARK_MASTER", "SPARK_CONF_DIR", "PYSPARK_DRIVER_PYTHON"):
        env.pop(name, None)
    return env


# ---------------------------------------------------------------- the cluster fixture

@dataclass
class Cluster:
    url: str            # spark://127.0.0.1:P
    ui: str             # http://127.0.0.1:W
    work_dirs: list[Path]
    logs: list[Path]

    def state(self) -> dict:
        return get_json(f"{self.ui}/json/")

    def completed_apps(self) -> list[str]:
        return [app["id"] for app in self.state().get("completedapps", [])]

    def log_tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{tail(p)}" for p in self.logs)


def _start(name: str, args: list[str], log_dir: Path, stack: ExitStack) -> tuple[subprocess.Popen, Path]:
    import pyspark

    spark_class = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-class")
    log = log_dir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([spark_class, *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=spark_env(), start_new_session=True)
    stack.callback(stop_group, proc)
    return proc, log


def _two_alive_workers(cluster: Cluster, procs: list[subprocess.Popen]) -> bool:
    dead = [p.args[1] for p in procs if p.poll() is not None]
    if dead:
        raise AssertionError(f"Spark daemon(s) exited early: {dead}\n{cluster.log_tails()}")
    state = cluster.state()
    alive = [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]
    return state.get("status") == "ALIVE" and len(alive) == N_WORKERS


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("standalone")
    port, ui_port = free_port(), free_port()
    master_url, ui = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
    with ExitStack() as stack:  # stops every daemon started so far, in reverse order, on any exit
        procs, logs, work_dirs = [], [], []
        proc, log = _start("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                      "--port", str(port), "--webui-port", str(ui_port)], base, stack)
        procs.append(proc)
        logs.append(log)
        for i in range(N_WORKERS):
            work = base / f"worker{i}"
            work.mkdir()
            proc, log = _start(f"worker{i}", ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                                              "--cores", "1", "--memory", "2g", "--webui-port", str(free_port()),
                                              "--work-dir", str(work), master_url], base, stack)
            procs.append(proc)
            logs.append(log)
            work_dirs.append(work)
        running = Cluster(url=master_url, ui=ui, work_dirs=work_dirs, logs=logs)
        try:
            wait_for(lambda: _two_alive_workers(running, procs), START_TIMEOUT, "standalone master with 2 workers")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{running.log_tails()}") from None
        yield running


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


def run_cluster_training(cluster: Cluster, input_path: Path, location: Path, home: Path) -> dict:
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

def test_standalone_cluster_gives_the_same_model_table_as_local(spark, cluster, panel_parquet, tmp_path):
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
