"""The jobs on a cluster whose executors cannot see the driver's project folder, as on multi-node or serverless
compute: nothing an executor reads or writes may be a driver-local path.

A standalone master runs from this venv; its one worker runs in a private mount namespace where the project folder
(the repository root: ``.venv``, ``src`` and the driver's ``$MANYMODELS_HOME``) is covered by an empty tmpfs, from a
separate venv outside the repository holding the package's wheel (not editable) and its dependencies at the versions
of ``constraints.txt``, with its own working directory and HOME. A folder outside the repository plays the
Databricks Volume: input, model table, staging folder and scores are there; the driver's MLflow store stays in the
hidden folder, so an executor reading anything from the driver's home fails.

The child driver (``support/hidden_folder_job.py``) runs the nightly job's prepare, train and score and the tuning
job's global and per-group searches with the bundle's parameters, and scores one registered model; then two
negative controls score with a staging folder inside the hidden folder (given, and by default): they must not
score, which shows the test would catch a driver-local path. Needs root (``unshare --mount``); skipped otherwise.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from cluster_util import Worker, spark_env, standalone_cluster, stop_group
from processes import free_port

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]  # the folder the worker cannot see
CHILD = ROOT / "tests" / "support" / "hidden_folder_job.py"
N_GROUPS = 40
CHILD_TIMEOUT = 480.0
VENV_TIMEOUT = 900.0
CACHE = Path(tempfile.gettempdir())  # outside the repository: the worker venvs are cached here across sessions
REPRODUCIBLE = "315532800"  # SOURCE_DATE_EPOCH of the wheel: same sources, same bytes, same cached venv
HIDE = 'mount -t tmpfs tmpfs "$1" && cd "$2" && shift 2 && exec "$@"'


# ---------------------------------------------------------------- the worker's own venv (outside the repository)

def _run(cmd: list[str], timeout: float = VENV_TIMEOUT, **kwargs) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout


def build_wheel(out: Path) -> Path:
    """The package's wheel, built from a copy of ``pyproject.toml`` and ``src/`` (the build writes nothing into
    the project folder, which other work may be using) with fixed timestamps."""
    snapshot = out / "source"
    shutil.copytree(ROOT / "src", snapshot / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy2(ROOT / "pyproject.toml", snapshot / "pyproject.toml")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out / "dist"), str(snapshot)],
         env=dict(os.environ, SOURCE_DATE_EPOCH=REPRODUCIBLE))
    return next((out / "dist").glob("manymodels-*.whl"))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextmanager
def _locked(path: Path):
    """One builder of the cached venvs at a time, across test sessions."""
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _requirements(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return b"\n".join(ln for ln in z.read(meta).splitlines() if ln.startswith(b"Requires-Dist:"))


def _fresh(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)


def _prune(keep, now: float | None = None) -> None:
    """Cached venvs unused for a day (a wheel's, a few MB of its own) or a week (a base, about 1.4 GB) go."""
    now = time.time() if now is None else now
    for pattern, days in (("manymodels-worker-venv-*", 1), ("manymodels-worker-base-*", 7)):
        for old in CACHE.glob(pattern):
            marker = old / ".ready"
            used = marker.stat().st_mtime if marker.exists() else old.stat().st_mtime
            if old not in keep and old.is_dir() and now - used > days * 86400:
                shutil.rmtree(old, ignore_errors=True)


def worker_venv_for(wheel: Path) -> Path:
    """``/tmp/manymodels-worker-venv-<wheel sha12>``: the wheel installed (not editable) with its ``[spark]``
    dependencies by ``pip install -c constraints.txt``. The dependencies are installed once per (constraints,
    requirements, Python) into a base venv; each wheel's venv is a hard-linked copy of it with the wheel
    reinstalled over it, so a changed source costs seconds, not a minute."""
    venv = CACHE / f"manymodels-worker-venv-{_sha256(wheel.read_bytes())[:12]}"
    ready = venv / ".ready"
    if ready.exists():
        ready.touch()  # in use: not pruned
        return venv
    key = _sha256((ROOT / "constraints.txt").read_bytes() + _requirements(wheel) + sys.version.encode())[:12]
    base = CACHE / f"manymodels-worker-base-{key}"
    with _locked(CACHE / "manymodels-worker-venv.lock"):
        if ready.exists():
            return venv
        if not (base / ".ready").exists():
            _fresh(base)
            _run([sys.executable, "-m", "venv", str(base)])  # from this interpreter's base Python, not its venv
            _run([str(base / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"),
                  f"{wheel}[spark]"])
        (base / ".ready").touch()
        _prune(keep=(base, venv))
        _fresh(venv)
        _run(["cp", "-al", str(base), str(venv)])
        (venv / ".ready").unlink()
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
              str(wheel)])
        ready.touch()
    return venv


@pytest.fixture(scope="session")
def worker_venv(tmp_path_factory) -> Path:
    """Built at most once per session (and reused across sessions while the sources are the same)."""
    wheel = build_wheel(tmp_path_factory.mktemp("wheel"))
    venv = worker_venv_for(wheel)
    import pyspark

    found = json.loads(_run([str(venv / "bin" / "python"), "-c", "import json, pyspark, manymodels, os; "
                             "print(json.dumps([pyspark.__version__, manymodels.__file__, "
                             "os.path.dirname(pyspark.__file__)]))"], cwd=tempfile.gettempdir()))
    assert found[0] == pyspark.__version__, f"worker pyspark {found[0]}, driver pyspark {pyspark.__version__}"
    assert Path(found[1]).is_relative_to(venv), found
    return venv


def _python(venv: Path) -> str:
    return str(venv / "bin" / "python")


def _spark_home(venv: Path) -> Path:
    return next(venv.glob("lib/python*/site-packages/pyspark"))


# ---------------------------------------------------------------- the cluster with the hidden folder

def _check_private_mounts() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the worker hides the project folder under a tmpfs in its own mount namespace")
    if shutil.which("unshare") is None:
        pytest.skip("unshare not found (util-linux): the worker cannot get a private mount namespace")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            'mount -t tmpfs tmpfs "$1" && test ! -e "$1/pyproject.toml"', "sh", str(ROOT)],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"cannot hide {ROOT} in a private mount namespace (unshare --mount, mount -t tmpfs): "
                    f"{probe.stderr.strip() or probe.returncode}")


def start_hidden_worker(cluster, venv: Path, base: Path) -> Worker:
    """A 2-core worker of ``cluster`` that sees an empty folder where the project is: its Spark and Python are the
    worker venv's, its working directory and HOME are its own."""
    work, cwd, home = base / "worker0", base / "worker-cwd", base / "worker-home"
    for folder in (work, cwd, home):
        folder.mkdir()
    env = spark_env()
    for name in [n for n in env if n.startswith(("MANYMODELS_", "MLFLOW_")) or n in ("VIRTUAL_ENV", "PYTHONPATH")]:
        env.pop(name)
    env.update(SPARK_HOME=str(_spark_home(venv)), PYSPARK_PYTHON=_python(venv), HOME=str(home), PWD=str(cwd),
               PATH=os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                    if p and not Path(p).resolve().is_relative_to(ROOT)))
    log = base / "worker0.log"
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", HIDE, "sh", str(ROOT), str(cwd),
           str(_spark_home(venv) / "bin" / "spark-class"), "org.apache.spark.deploy.worker.Worker",
           "--host", "127.0.0.1", "--cores", "2", "--memory", "2g", "--webui-port", str(free_port()),
           "--work-dir", str(work), cluster.url]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=cwd, start_new_session=True)
    cluster.stack.callback(stop_group, proc)
    worker = Worker("worker0", "127.0.0.1", proc, work, log)
    cluster.workers.append(worker)
    cluster.work_dirs.append(work)
    cluster.logs.append(log)
    return worker


@pytest.fixture(scope="module")
def hidden_cluster(tmp_path_factory, worker_venv):
    _check_private_mounts()
    base = tmp_path_factory.mktemp("hidden_cluster")
    with standalone_cluster(base, hosts=()) as cluster:  # the master alone; its worker cannot see the project
        start_hidden_worker(cluster, worker_venv, base)
        cluster.wait_ready()
        yield cluster


@pytest.fixture(scope="module")
def job(hidden_cluster, worker_venv, tmp_path_factory) -> dict:
    """The child driver's report; its MANYMODELS_HOME (MLflow store and artifacts) is inside the hidden folder."""
    volume = tmp_path_factory.mktemp("volume")
    home = ROOT / ".manymodels" / f"hidden-folder-test-{uuid.uuid4().hex[:8]}"  # git-ignored, removed below
    config = volume.parent / f"{volume.name}-config.json"
    config.write_text(json.dumps({"master": hidden_cluster.url, "repo": str(ROOT), "volume": str(volume)}))
    env = dict(spark_env(), MANYMODELS_HOME=str(home), MANYMODELS_OUTPUT_ROOT=str(volume),
               PYSPARK_PYTHON=_python(worker_venv))  # the executors' interpreter: a path valid on the workers
    env.pop("MANYMODELS_STAGING", None)
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(CHILD), str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        out, err = proc.communicate()
        raise AssertionError(f"the child driver did not finish in {CHILD_TIMEOUT:.0f} s\nstderr:\n{err[-6000:]}"
                             f"\n{hidden_cluster.log_tails()}") from None
    finally:
        stop_group(proc)
        shutil.rmtree(home, ignore_errors=True)
        try:
            home.parent.rmdir()  # .manymodels, when this test made it and nothing else is in it
        except OSError:
            pass
    results = [ln[len("RESULT "):] for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and results, (
        f"the child driver failed ({proc.returncode})\nstdout:\n{out[-3000:]}\nstderr:\n{err[-8000:]}"
        f"\n{hidden_cluster.log_tails()}")
    result = json.loads(results[-1])
    result.update(volume=str(volume), home=str(home), venv=str(worker_venv), wall=round(time.monotonic() - start))
    print(f"hidden-folder job: {json.dumps(result, indent=1)}")  # shown with -s, and with a failure
    return result


# ---------------------------------------------------------------- the tests

def test_the_executors_cannot_see_the_driver_folder(job, hidden_cluster):
    assert job["master"] == hidden_cluster.url
    assert job["executors"], "no executor answered"
    for seen in job["executors"]:
        assert seen["repo_src_visible"] is False, f"an executor sees {ROOT}/src/manymodels: {seen}"
        assert seen["home_visible"] is False, f"an executor sees the driver's MANYMODELS_HOME: {seen}"
        assert Path(seen["manymodels"]).is_relative_to(job["venv"]), f"the executor's manymodels: {seen}"
        assert seen["prefix"] == job["venv"] and Path(seen["python"]).is_relative_to(job["venv"]), seen
        assert not Path(seen["cwd"]).is_relative_to(ROOT), seen


def test_train_score_and_tune_with_the_bundle_parameters_stage_only_in_the_volume(job):
    volume, rows = Path(job["volume"]), job["input_rows"]
    staging = volume / "staging"
    assert job["score"]["rows"] == rows and job["score"]["status"] == {"ok": rows}, job["score"]
    assert job["score_single"] == {"ok": rows}, job["score_single"]
    assert job["tune_per_group"]["counts"] == {"ok": N_GROUPS, "failed": 0, "skipped": 0}, job["tune_per_group"]
    assert job["tune_per_group"]["n_groups"] == job["tune_per_group"]["best_groups"] == N_GROUPS
    staged = [Path(p) for p in job["staged_models"]]
    assert staged and all(p.is_relative_to(staging / "models") for p in staged), staged
    assert {p.name for p in staged} >= {"index.parquet", "models.parquet"}
    assert job["search_staging"] and all(Path(p).parent == staging / "search" for p in job["search_staging"])
    assert job["search_leftovers"] == [], "a search left its staged data behind"
    assert job["home_staging_before_negatives"] == [], "something was staged under the driver's MANYMODELS_HOME"
    assert not [m for m in job["warnings_before_negatives"] if "cannot read it" in m]


@pytest.mark.parametrize("case", ["negative_explicit", "negative_default"])
def test_a_staging_folder_inside_the_hidden_folder_does_not_score(job, case):
    """The control: the same scoring with the store staged where only the driver can read it scores nothing."""
    found = job[case]
    staged = job["negative_staged"][case.removeprefix("negative_")]
    assert staged, f"{case}: the driver staged nothing, so this control proves nothing: {found}"
    assert all(Path(p).is_relative_to(ROOT) for p in staged)
    if found["raised"] is None:
        assert "ok" not in found["status"] and found["rows"] == job["input_rows"], found
        assert any(re.search(r"missing|No such file", e) for e in found["errors"]), found
    if case == "negative_default":
        assert any("executors on other machines cannot read it" in m and job["home"] in m
                   for m in found["warnings"]), found["warnings"]
