"""Exactly-once training under faults on a real Spark standalone cluster (issue 7, part 1).

One cluster for the module: a master and two 1-core workers, one on 127.0.0.1 and one on
127.0.0.2 (both loopback; two host names because Spark never runs a speculative copy on the host
of the attempt it duplicates). Each case trains 2,000 groups from a child driver
(``cluster_faults_train.py``), injects a fault while tasks are inside the training stage, and then
logs to MLflow from the child. The cases:

A. a whole worker dies (Worker JVM, executor JVM, PySpark daemon and Python workers SIGKILLed);
B. one Python worker (a child of an executor's ``pyspark.daemon``) is SIGKILLed mid-task;
C. ``spark.speculation=true`` and one task held on its first attempt, so a speculative copy wins.

The estimator wrapper in the child records every task attempt in a marker file and holds the
first attempts until the test releases them, so each fault lands inside the training stage
without any timing guess. After each case: the job completed; the model table has exactly one
``ok`` row per group with the same model bytes as a fault-free local run; the killed or losing
attempt left no rows and its partition was produced by another attempt; MLflow has exactly one
run (tagged with the training run), one model file per group under ``models/`` (same bytes) and
exactly one registered version. If a fault did not hit the training stage the case fails.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
import pytest
from cluster_util import Cluster, parent_pid, spark_env, standalone_cluster, stop_group, tail, wait_for
from sklearn.linear_model import LinearRegression

from manymodels.core import model_bytes
from manymodels.core.keys import key_path
from manymodels.core.panel import make_panel
from manymodels.core.spec import PanelSpec
from manymodels.spark.training import train_per_group
from manymodels.tracking.context import RUN_TAG

pytestmark = pytest.mark.cluster

HERE = Path(__file__).resolve().parents[1] / "support"  # the child-process scripts
KEYS = ["store", "item"]
FEATURES = ["x0", "x1", "x2"]
N_GROUPS = 2000
HOSTS = ("127.0.0.1", "127.0.0.2")
HOLD_TIMEOUT = 180.0    # a held attempt goes on by itself after this (the test releases it much sooner)
MARKER_TIMEOUT = 240.0  # until the held attempts show up
SLOW_TIMEOUT = 90.0     # the slow attempt of the speculation case waits this long unless Spark kills it
CHILD_TIMEOUT = 480.0   # the whole child driver: training and MLflow logging
SPECULATION = {
    "spark.speculation": "true",
    "spark.speculation.interval": "100ms",
    "spark.speculation.quantile": "0.5",
    "spark.speculation.multiplier": "1.5",
    "spark.speculation.minTaskRuntime": "500ms",
    "spark.speculation.efficiency.enabled": "false",  # speculate on run time alone
}
ATTEMPT = re.compile(r"stage=(\d+) partition=(\d+) attempt=(\d+) tid=(\d+)")


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def fault_cluster(tmp_path_factory):
    with standalone_cluster(tmp_path_factory.mktemp("faults_cluster"), hosts=HOSTS) as running:
        yield running


@pytest.fixture
def two_hosts(fault_cluster) -> Cluster:
    """The cluster with one live worker on each host: a worker killed by an earlier case is replaced."""
    for host in HOSTS:
        if not any(w.host == host for w in fault_cluster.live_workers()):
            fault_cluster.start_worker(host)
    fault_cluster.wait_ready()
    return fault_cluster


@pytest.fixture(scope="module")
def panel(tmp_path_factory) -> Path:
    """2,000 groups of 20+ rows (about 40 on average), 3 features, in four files with rows dealt out in turn."""
    rows, _ = make_panel(PanelSpec(n_groups=N_GROUPS, mean_rows=40, n_features=3, seed=77))
    path = tmp_path_factory.mktemp("faults_input") / "panel"
    path.mkdir()
    for i in range(4):
        rows.iloc[i::4].to_parquet(path / f"part-{i}.parquet", index=False)
    return path


@pytest.fixture(scope="module")
def reference(spark, panel, tmp_path_factory) -> pd.DataFrame:
    """The fault-free model table of the same data (local mode, plain LinearRegression), by key."""
    table = train_per_group(spark.read.parquet(str(panel)), group_cols=KEYS, feature_cols=FEATURES, label_col="y",
                            estimator=LinearRegression(), training_run_id="faults-reference",
                            location=str(tmp_path_factory.mktemp("faults_reference") / "table"), progress=False)
    assert table.counts == {"ok": N_GROUPS, "failed": 0, "skipped": 0}
    return by_key(pd.read_parquet(table.version))


# ---------------------------------------------------------------- the child driver

@dataclass
class Child:
    proc: subprocess.Popen
    cluster: Cluster
    run_id: str
    home: Path
    markers: Path
    release: Path
    out: Path
    err: Path

    def attempts(self) -> dict[int, dict]:
        """Every task attempt of the training stage that reached its first group, by task id."""
        found = {}
        for path in self.markers.glob("*.json"):
            info = json.loads(path.read_text())
            found[info["tid"]] = dict(info, held=path.name.startswith("held-"))
        return found

    def held(self) -> list[dict]:
        self.check_alive()
        return sorted((a for a in self.attempts().values() if a["held"]), key=lambda a: a["tid"])

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the child driver exited early ({self.proc.returncode}):\n{self.logs()}")

    def logs(self) -> str:
        return f"stdout:\n{tail(self.out, 20)}\nstderr:\n{tail(self.err, 60)}\n{self.cluster.log_tails()}"

    def finish(self) -> dict:
        try:
            self.proc.wait(CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the child driver did not finish in {CHILD_TIMEOUT:.0f} s\n{self.logs()}") from None
        results = [ln[len("RESULT "):] for ln in self.out.read_text().splitlines() if ln.startswith("RESULT ")]
        assert self.proc.returncode == 0 and results, f"the child driver failed ({self.proc.returncode})\n{self.logs()}"
        return json.loads(results[-1])


def start_child(cluster: Cluster, panel: Path, tmp_path: Path, run_id: str, mode: str, conf=None) -> Child:
    markers = tmp_path / "markers"
    markers.mkdir()
    home = tmp_path / "home"
    config = {"master": cluster.url, "input": str(panel), "location": str(tmp_path / "table"), "run_id": run_id,
              "markers": str(markers), "release": str(tmp_path / "release"), "mode": mode, "slow_partition": 0,
              "timeout": HOLD_TIMEOUT if mode == "hold" else SLOW_TIMEOUT, "conf": conf or {}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    out, err = tmp_path / "child.out", tmp_path / "child.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([sys.executable, str(HERE / "cluster_faults_train.py"), str(tmp_path / "config.json")],
                                stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                                env=dict(spark_env(), MANYMODELS_HOME=str(home)), start_new_session=True)
    return Child(proc, cluster, run_id, home, markers, Path(config["release"]), out, err)


@pytest.fixture
def children():
    """Child drivers started by a test, stopped (with their driver JVM) however the test ends."""
    started: list[Child] = []
    yield started
    for child in started:
        child.release.touch()
        stop_group(child.proc)


def held_on_every_host(child: Child) -> list[dict] | None:
    held = child.held()
    return held if {a["host"] for a in held} >= set(HOSTS) else None


# ---------------------------------------------------------------- checks

def by_key(pdf: pd.DataFrame) -> pd.DataFrame:
    return pdf.set_index(KEYS).sort_index()


def parse_attempts(table: pd.DataFrame) -> pd.DataFrame:
    parsed = table["task_attempt"].str.extract(ATTEMPT).astype("int64")
    parsed.columns = ["stage", "partition", "attempt", "tid"]
    return parsed


def check_model_table(result: dict, child: Child, reference: pd.DataFrame) -> pd.DataFrame:
    """Exactly one ok row per group, with the reference's model bytes; returns the table by key."""
    assert result["counts"] == {"ok": N_GROUPS, "failed": 0, "skipped": 0}, result
    table = pd.read_parquet(result["version"])
    duplicates = int(table.duplicated(KEYS).sum())
    assert duplicates == 0, f"{duplicates} duplicate row(s) for a group in the model table"
    table = by_key(table)
    assert len(table) == N_GROUPS and table.index.equals(reference.index), "groups missing or extra"
    assert table["status"].eq("ok").all() and table["training_run_id"].eq(child.run_id).all()
    assert [model_bytes.sha256(b) for b in table["model"]] == table["model_sha256"].tolist()
    differ = table.index[table["model_sha256"] != reference["model_sha256"]]
    assert differ.empty, f"{len(differ)} group(s) with model bytes unlike the fault-free run, e.g. {list(differ[:3])}"
    for col in ("n_rows", "n_train", "n_holdout", "seed"):
        pd.testing.assert_series_equal(table[col], reference[col], check_dtype=False)
    attempts = child.attempts()
    unknown = set(parse_attempts(table)["tid"]) - set(attempts)
    assert not unknown, f"rows written by task attempts the estimator never saw: {sorted(unknown)}"
    return table


def check_mlflow(result: dict, child: Child, table: pd.DataFrame) -> None:
    """One run (tagged with the training run), one model file per group, one registered version."""
    from mlflow import MlflowClient

    uri = result["tracking_uri"]
    assert uri.startswith("sqlite:") and str(child.home) in uri, uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=100)
    assert len(runs) == 1, f"expected exactly one MLflow run, found {len(runs)}: {[r.info.run_id for r in runs]}"
    run = runs[0]
    assert run.info.run_id == result["mlflow_run_id"] and run.data.tags.get(RUN_TAG) == child.run_id
    assert run.info.status == "FINISHED"

    models = Path(unquote(urlparse(run.info.artifact_uri).path)) / "models"
    files = {p.relative_to(models).as_posix(): p for p in models.rglob("*") if p.is_file()}
    want = {f"{key_path(tuple(KEYS), key)}.pkl": sha for key, sha in table["model_sha256"].items()}
    assert len(files) == N_GROUPS, f"{len(files)} files under models/ for {N_GROUPS} groups"
    assert set(files) == set(want), f"unexpected or missing model files, e.g. {sorted(set(files) ^ set(want))[:3]}"
    wrong = [rel for rel, path in files.items() if model_bytes.sha256(path.read_bytes()) != want[rel]]
    assert not wrong, f"{len(wrong)} model file(s) differ from the model table, e.g. {wrong[:3]}"

    registered = client.search_registered_models()
    assert [m.name for m in registered] == [result["model_name"]], [m.name for m in registered]
    versions = client.search_model_versions(f"name = '{result['model_name']}'")
    assert len(versions) == 1, f"expected one registered version, found {[v.version for v in versions]}"
    assert str(versions[0].version) == result["registered_version"] and versions[0].run_id == run.info.run_id
    assert versions[0].tags.get(RUN_TAG) == child.run_id


def check_replaced(table: pd.DataFrame, child: Child, lost: dict) -> pd.DataFrame:
    """The lost attempt wrote nothing; its partition came from another attempt. Returns those rows' attempts."""
    parsed = parse_attempts(table)
    assert not (parsed["tid"] == lost["tid"]).any(), (
        f"the attempt the fault should have stopped ran to the end and wrote rows: {lost}. The fault missed the "
        "training stage (for the speculation case: no speculative copy replaced the slow attempt)")
    rows = parsed[parsed["partition"] == lost["partition"]]
    assert len(rows), f"no rows of partition {lost['partition']}"
    return rows.assign(host=[child.attempts()[t]["host"] for t in rows["tid"]])


def report(case: str, seconds: float, result: dict, child: Child, **facts) -> None:
    """One ``FAULTS`` line per case (shown with ``pytest -s``): what was injected and what it cost."""
    first = min(a["time"] for a in child.attempts().values())
    line = {"case": case, "groups": N_GROUPS, "seconds": round(seconds, 1), "duplicates": 0,
            "spark_seconds": result["spark_seconds"], "train_seconds": result["train_seconds"],
            "until_training_stage_seconds": round(first - result["train_started"], 1),
            "log_seconds": result["log_seconds"], **facts}
    print("FAULTS " + json.dumps(line, sort_keys=True))


# ---------------------------------------------------------------- the cases

def hold_one_task(two_hosts, panel, tmp_path, children, name: str):
    """Start a child whose first attempts wait on every worker; return it and the held attempt to hit."""
    child = start_child(two_hosts, panel, tmp_path, name, "hold")
    children.append(child)
    held = wait_for(lambda: held_on_every_host(child), MARKER_TIMEOUT, "a held training task on each worker")
    return child, held[0]


def release_and_check(child, reference, lost):
    """Let the held attempts go, wait for the child, check its table; return (result, table, lost's rows)."""
    child.release.touch()
    result = child.finish()
    table = check_model_table(result, child, reference)
    return result, table, check_replaced(table, child, lost)


def test_training_survives_losing_a_worker(two_hosts, panel, reference, tmp_path, children):
    start = time.perf_counter()
    child, lost = hold_one_task(two_hosts, panel, tmp_path, children, "faults-worker-loss")
    victim = next(w for w in two_hosts.live_workers() if w.host == lost["host"])
    killed = two_hosts.kill_worker(victim)
    assert lost["pid"] in killed, f"the held Python worker {lost['pid']} was not under {victim.name}"
    result, table, rows = release_and_check(child, reference, lost)
    survivor = next(h for h in HOSTS if h != lost["host"])
    assert rows["host"].eq(survivor).all(), f"partition {lost['partition']} not rerun on the surviving worker"
    check_mlflow(result, child, table)
    report("worker lost", time.perf_counter() - start, result, child, killed=f"{victim.name} ({len(killed)} processes)",
           lost_partition=lost["partition"], rerun_attempts=sorted(set(rows["attempt"])))


def test_training_survives_losing_a_python_worker(two_hosts, panel, reference, tmp_path, children):
    start = time.perf_counter()
    child, lost = hold_one_task(two_hosts, panel, tmp_path, children, "faults-python-worker-loss")
    daemon = Path(f"/proc/{parent_pid(lost['pid'])}/cmdline").read_bytes()
    assert b"pyspark.daemon" in daemon, f"the held attempt's parent is not a PySpark daemon: {daemon!r}"
    os.kill(lost["pid"], signal.SIGKILL)
    result, table, rows = release_and_check(child, reference, lost)
    assert (rows["attempt"] >= 1).all(), f"partition {lost['partition']} was not retried: {rows.drop_duplicates()}"
    assert len(two_hosts.live_workers()) == len(HOSTS) and two_hosts.ready()  # the workers themselves live on
    check_mlflow(result, child, table)
    report("python worker lost", time.perf_counter() - start, result, child, killed=f"python worker pid {lost['pid']}",
           lost_partition=lost["partition"], rerun_attempts=sorted(set(rows["attempt"])))


def test_speculative_copy_of_a_slow_task_commits_once(two_hosts, panel, reference, tmp_path, children):
    start = time.perf_counter()
    child = start_child(two_hosts, panel, tmp_path, "faults-speculation", "slow", conf=SPECULATION)
    children.append(child)
    result = child.finish()
    child.release.touch()  # the slow first attempt may still wait if Spark did not kill it

    table = check_model_table(result, child, reference)
    slow = [a for a in child.attempts().values() if a["held"]]
    assert len(slow) == 1 and slow[0]["partition"] == 0, f"expected one held attempt of partition 0: {slow}"
    rows = check_replaced(table, child, slow[0])
    assert (rows["attempt"] >= 1).all(), (
        f"no speculative copy won for the slow partition 0 (rows from attempts {sorted(set(rows['attempt']))}); "
        "speculation did not trigger")
    assert rows["host"].ne(slow[0]["host"]).all()
    check_mlflow(result, child, table)
    report("speculation", time.perf_counter() - start, result, child, slow_partition=0,
           winning_attempts=sorted(set(rows["attempt"])))
