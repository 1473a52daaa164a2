"""Process helpers for tests that start servers and daemons: free ports, polling without sleeps, stopping
a child's whole process group, ``/proc`` lookups, and ``mlflow server`` on 127.0.0.1."""
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
from contextlib import contextmanager
from pathlib import Path

STOP_TIMEOUT = 30.0


# ---------------------------------------------------------------- small helpers

def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
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


def run_connect_job(script: Path, out_dir: Path, timeout: float = 900) -> tuple[dict, str]:
    """Run a child script under Spark Connect (``SPARK_REMOTE=local[2]``, its own local Connect server, so it does
    not meet the tests' classic session); return the JSON after its ``RESULT `` marker and its output."""
    env = {**os.environ, "SPARK_REMOTE": "local[2]", "MANYMODELS_HOME": str(out_dir), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(script), str(out_dir)], capture_output=True, text=True, env=env,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout.split("RESULT ", 1)[1].splitlines()[0]), proc.stdout


def parent_pid(pid: int) -> int:
    """The parent of ``pid`` from ``/proc`` (raises ``OSError`` when it is gone)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren, ...), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(parent_pid(int(entry.name)), []).append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@contextmanager
def mlflow_server(backend_store_uri: str, artifacts: list[str], log: Path, *, workers: int = 1,
                  timeout: float = 120.0):
    """``mlflow server`` on 127.0.0.1 in its own process group; yields its URL once ``/health`` answers 200.

    ``artifacts``: the artifact options, e.g. ``["--default-artifact-root", uri]`` or
    ``["--artifacts-destination", uri]``. The server and the workers it started are stopped on exit.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", backend_store_uri, *artifacts, "--workers", str(workers)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"mlflow server exited with code {proc.returncode}:\n{tail(log)}")
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                return response.status == 200

        wait_for(healthy, timeout, f"mlflow server at {url}")
        yield url
    finally:
        stop_group(proc)
        assert proc.poll() is not None, "mlflow server still running"
