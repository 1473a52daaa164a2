"""A Spark standalone cluster for tests: a master and workers started from the installed pyspark.

Each daemon runs in its own session (process group), so stopping a worker also stops the
executors and Python workers it launched. ``standalone_cluster`` stops every daemon it started
when it exits, also when a test fails; the ``cluster`` fixture is a master with two 1-core workers
on 127.0.0.1, one per test module that uses it (import it: ``from cluster_util import cluster``).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from processes import STOP_TIMEOUT, descendants, free_port, get_json, parent_pid, stop_group, tail, wait_for  # noqa: F401

START_TIMEOUT = 120.0
# The driver's settings for a standalone cluster on 127.0.0.1 (the jobs in this folder start their sessions with it).
CLUSTER_CONF = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.executor.memory": "1g",
    "spark.default.parallelism": "2",
}


def spark_env(local_ip: str = "127.0.0.1") -> dict:
    env = dict(os.environ, SPARK_LOCAL_IP=local_ip, PYSPARK_PYTHON=sys.executable)
    for name in ("SPARK_REMOTE", "MANYMODELS_SPARK_MASTER", "SPARK_CONF_DIR", "PYSPARK_DRIVER_PYTHON"):
        env.pop(name, None)
    return env


# ---------------------------------------------------------------- the cluster

@dataclass
class Worker:
    name: str
    host: str
    proc: subprocess.Popen
    work_dir: Path
    log: Path
    killed: bool = False


@dataclass
class Cluster:
    url: str            # spark://127.0.0.1:P
    ui: str             # http://127.0.0.1:W
    work_dirs: list[Path]
    logs: list[Path]
    base: Path | None = None
    master: subprocess.Popen | None = None
    workers: list[Worker] = field(default_factory=list)
    stack: ExitStack | None = field(default=None, repr=False)

    def state(self) -> dict:
        return get_json(f"{self.ui}/json/")

    def completed_apps(self) -> list[str]:
        return [app["id"] for app in self.state().get("completedapps", [])]

    def log_tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{tail(p)}" for p in self.logs)

    def live_workers(self) -> list[Worker]:
        """Workers started and not killed on purpose."""
        return [w for w in self.workers if not w.killed]

    def start_worker(self, host: str = "127.0.0.1", cores: int = 1) -> Worker:
        """Start one more worker (on ``host``, any 127.x.y.z address) registered with the master."""
        name = f"worker{len(self.workers)}"
        work = self.base / name
        work.mkdir()
        proc, log = _start(name, ["org.apache.spark.deploy.worker.Worker", "--host", host,
                                  "--cores", str(cores), "--memory", "2g", "--webui-port", str(free_port(host)),
                                  "--work-dir", str(work), self.url], self.base, self.stack, local_ip=host)
        worker = Worker(name, host, proc, work, log)
        self.workers.append(worker)
        self.work_dirs.append(work)
        self.logs.append(log)
        return worker

    def kill_worker(self, worker: Worker) -> list[int]:
        """SIGKILL a worker as if its machine died: the Worker JVM, its executor JVMs (its process group)
        and every process below them (the PySpark daemon and Python workers have their own group).
        Returns the pids killed."""
        worker.killed = True
        below = descendants(worker.proc.pid)
        try:
            os.killpg(worker.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        worker.proc.wait(STOP_TIMEOUT)
        return [worker.proc.pid, *below]

    def ready(self) -> bool:
        """The master is alive and exactly the live workers are registered as ALIVE (raises if a daemon died)."""
        dead = [w.name for w in self.live_workers() if w.proc.poll() is not None]
        if self.master is not None and self.master.poll() is not None:
            dead.append("master")
        if dead:
            raise AssertionError(f"Spark daemon(s) exited early: {dead}\n{self.log_tails()}")
        state = self.state()
        alive = [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]
        return state.get("status") == "ALIVE" and len(alive) == len(self.live_workers())

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        n = len(self.live_workers())
        try:
            wait_for(self.ready, timeout, f"standalone master with {n} workers")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tails()}") from None


def _start(name: str, args: list[str], log_dir: Path, stack: ExitStack,
           local_ip: str = "127.0.0.1") -> tuple[subprocess.Popen, Path]:
    import pyspark

    spark_class = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-class")
    log = log_dir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([spark_class, *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=spark_env(local_ip), start_new_session=True)
    stack.callback(stop_group, proc)
    return proc, log


@contextmanager
def standalone_cluster(base: Path, hosts: tuple[str, ...] = ("127.0.0.1", "127.0.0.1")):
    """A master on 127.0.0.1 and one 1-core worker per entry of ``hosts``; every daemon stopped on exit."""
    port, ui_port = free_port(), free_port()
    with ExitStack() as stack:  # stops every daemon started so far, in reverse order, on any exit
        running = Cluster(url=f"spark://127.0.0.1:{port}", ui=f"http://127.0.0.1:{ui_port}", work_dirs=[],
                          logs=[], base=base, stack=stack)
        running.master, log = _start("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                                "--port", str(port), "--webui-port", str(ui_port)], base, stack)
        running.logs.append(log)
        for host in hosts:
            running.start_worker(host)
        running.wait_ready()
        yield running


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A master and two 1-core workers on 127.0.0.1 for one test module."""
    with standalone_cluster(tmp_path_factory.mktemp("standalone")) as running:
        yield running
