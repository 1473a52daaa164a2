"""Driver memory of the whole per-group workflow at 5,000 and 20,000 groups (issue 7: bounded driver memory).

For each number of groups G (x ``--rows`` rows x 5 features, uniform sizes) and estimator (``linear``:
LinearRegression, blobs of ~0.6 KB; ``tree``: DecisionTreeRegressor(max_depth=8), blobs of several KB) a
fresh driver process runs, after one Spark session start:
  train   manymodels.train_per_group (model table committed to a folder)
  log     tracking.log_training into a sqlite MLflow store in a temp MANYMODELS_HOME (artifacts + registered router)
  score   inference.score_per_group of every training row through the registered alias, written as Parquet
The panel is generated and written by the parent process beforehand (a pandas frame of every row is a
benchmark artefact, not part of the workflow).

Measured per phase: the peak RSS of the driver's Python process (VmHWM, reset before the phase through
``/proc/self/clear_refs``, and a 50 ms VmRSS sampler as a cross-check) and the peak RSS of the driver JVM
(the java child of the Python driver; in local mode it is the executor too, so it also holds the shuffle,
Parquet and Arrow buffers of the tasks). The baseline is the Python RSS right after the session start and
a first tiny job. Memory figures do not depend on CPU load from other processes; the seconds do.

Last line: ``RESULT driver_peak_mb_5000=... driver_peak_mb_20000=... ratio=... jvm_peak_mb_5000=...
jvm_peak_mb_20000=...`` for the ``--result-estimator`` (default ``tree``, the larger blobs); driver =
the Python driver process's peak RSS over all phases.

Usage: python bench/bench_driver_memory.py [--groups 5000,20000] [--estimators linear,tree] [--rows 200]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PHASES = ("train", "log", "score")
KEYS = ["store", "item"]


# ---------------------------------------------------------------- /proc helpers (Linux)

def status_kb(pid: int | str, field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of a process in kB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak(pid: int | str) -> bool:
    """Reset the process's VmHWM to its current RSS (``echo 5 > clear_refs``, Linux 4.0+)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry))
    return out


def driver_jvm(pid: int) -> int | None:
    """The java process started by this Python driver (a child, or a grandchild through a launcher shell)."""
    queue = children(pid)
    while queue:
        p = queue.pop(0)
        try:
            comm = Path(f"/proc/{p}/comm").read_text().strip()
        except OSError:
            continue
        if comm == "java":
            return p
        queue.extend(children(p))
    return None


class Sampler(threading.Thread):
    """Max VmRSS of this process since the last ``reset``, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval, self.peak_kb, self._stop = interval, 0, threading.Event()

    def reset(self) -> None:
        self.peak_kb = status_kb("self", "VmRSS")

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_kb = max(self.peak_kb, status_kb("self", "VmRSS"))

    def stop(self) -> None:
        self._stop.set()


# ---------------------------------------------------------------- one driver process (child)

def child(args) -> None:
    import mlflow  # noqa: F401
    import pandas as pd  # noqa: F401 - libraries imported before the baseline
    from pyspark.sql import functions as F
    from sklearn.linear_model import LinearRegression
    from sklearn.tree import DecisionTreeRegressor

    from manymodels import tracking
    from manymodels.api import score_per_group
    from manymodels.core.panel import feature_names
    from manymodels.spark.session import get_spark
    from manymodels.spark.training import train_per_group

    estimators = {"linear": LinearRegression, "tree": lambda: DecisionTreeRegressor(max_depth=8, random_state=0)}
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    spark = get_spark(args.master, app_name="bench-memory", conf={
        "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false", "spark.log.level": "ERROR"})
    spark.range(10).count()
    session_s = time.perf_counter() - t0
    ctx = tracking.configure(experiment="bench-memory")
    jvm = driver_jvm(os.getpid())
    baseline_kb = status_kb("self", "VmRSS")
    work = Path(args.work)
    features = feature_names(5)
    state: dict = {}

    def train():
        state["table"] = train_per_group(spark.read.parquet(args.data), group_cols=KEYS, feature_cols=features,
                                         label_col="y", estimator=estimators[args.estimator](),
                                         training_run_id=f"mem-{args.estimator}-{args.groups}",
                                         location=str(work / "model_table"), progress=False)

    def log():
        state["logged"] = tracking.log_training(spark, state["table"], ctx, name=f"bench_mem_{args.estimator}")

    def score():
        scored = score_per_group(spark.read.parquet(args.data), state["logged"].model_uri)
        scored.write.mode("overwrite").parquet(str(work / "scores"))

    phases = {}
    for name, fn in zip(PHASES, (train, log, score)):
        reset_peak("self")
        jvm_reset = reset_peak(jvm) if jvm else False
        sampler.reset()
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
        phases[name] = {"python_peak_kb": max(status_kb("self", "VmHWM"), sampler.peak_kb),
                        "jvm_peak_kb": status_kb(jvm, "VmHWM") if jvm else 0, "jvm_reset": jvm_reset,
                        "seconds": seconds}
    table = state["table"]
    blob = table.read(spark).where("status = 'ok'").agg(F.avg(F.length("model")).alias("b")).collect()[0]["b"]
    scored_rows = spark.read.parquet(str(work / "scores")).where("status = 'ok'").count()
    sampler.stop()
    print("PHASES " + json.dumps({"groups": args.groups, "estimator": args.estimator, "baseline_kb": baseline_kb,
                                  "session_s": session_s, "ok": table.counts["ok"], "blob_bytes": blob,
                                  "scored_ok": scored_rows, "jvm_pid": jvm, "phases": phases,
                                  "python_hwm_kb": status_kb("self", "VmHWM")}), flush=True)
    spark.stop()


# ---------------------------------------------------------------- parent: data, one child per run, the table

def prepare(groups: int, rows: int, root: Path) -> str:
    from manymodels.core.panel import make_panel, write_parquet
    from manymodels.core.spec import PanelSpec

    panel, _ = make_panel(PanelSpec(n_groups=groups, mean_rows=rows, n_features=5, size_distribution="uniform",
                                    seed=1))
    return str(write_parquet(panel, root / f"panel_{groups}"))


def run_child(args, groups: int, estimator: str, data: str, work: Path) -> dict:
    run_dir = work / f"run_{estimator}_{groups}"
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MANYMODELS_HOME=str(run_dir / "home"))
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, __file__, "--child", "--groups", str(groups), "--estimator", estimator, "--data", data,
           "--work", str(run_dir), "--master", args.master]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PHASES ")), None)
    if proc.returncode != 0 or line is None:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        raise SystemExit(f"driver process for {estimator} x {groups} groups failed (exit {proc.returncode})")
    shutil.rmtree(run_dir, ignore_errors=True)
    return json.loads(line[len("PHASES "):])


def mb(kb: float) -> float:
    return kb / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", default="5000,20000")
    ap.add_argument("--estimators", default="linear,tree")
    ap.add_argument("--result-estimator", default="tree")
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--estimator", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.groups = int(args.groups)
        return child(args)

    groups = [int(g) for g in args.groups.split(",")]
    estimators = args.estimators.split(",")
    work = Path(tempfile.mkdtemp(prefix="mm-bench-mem-"))
    print(f"machine: {os.cpu_count()} cores, master {args.master}, python {sys.version.split()[0]}; one fresh driver "
          f"process per run; {args.rows} rows x 5 features per group; other processes may load the CPU (memory "
          "figures do not depend on it, seconds do)")
    results: dict = {}
    try:
        for g in groups:
            data = prepare(g, args.rows, work)
            for est in estimators:
                results[(est, g)] = r = run_child(args, g, est, data, work)
                print(f"  {est} x {g}: {r['ok']} models ok (mean blob {r['blob_bytes'] / 1024:.1f} KB), "
                      f"{r['scored_ok']} rows scored ok, session start {r['session_s']:.1f} s", flush=True)
            shutil.rmtree(data, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'estimator':<10}{'groups':>7}  {'phase':<8}{'seconds':>8}{'Python peak MB':>16}{'over baseline MB':>18}"
          f"{'JVM peak MB':>13}")
    for (est, g), r in results.items():
        base = r["baseline_kb"]
        print(f"{est:<10}{g:>7}  {'baseline':<8}{r['session_s']:>8.1f}{mb(base):>16.0f}{0:>18.0f}{'':>13}")
        for name in PHASES:
            p = r["phases"][name]
            print(f"{est:<10}{g:>7}  {name:<8}{p['seconds']:>8.1f}{mb(p['python_peak_kb']):>16.0f}"
                  f"{mb(p['python_peak_kb'] - base):>18.0f}{mb(p['jvm_peak_kb']):>13.0f}")

    def peaks(est, g):
        r = results[(est, g)]
        py = max(r["phases"][n]["python_peak_kb"] for n in PHASES)
        return mb(py), mb(py - r["baseline_kb"]), mb(max(r["phases"][n]["jvm_peak_kb"] for n in PHASES))

    lo, hi = min(groups), max(groups)
    print(f"\nratios {hi}/{lo} groups ({hi / lo:.0f}x the groups and the model bytes):")
    print(f"{'estimator':<10}{'Python peak':>12}{'over baseline':>15}{'JVM peak':>10}   per phase (Python peak)")
    for est in estimators:
        a, b = peaks(est, lo), peaks(est, hi)
        ph_lo, ph_hi = results[(est, lo)]["phases"], results[(est, hi)]["phases"]
        per_phase = ", ".join(f"{n} {ph_hi[n]['python_peak_kb'] / ph_lo[n]['python_peak_kb']:.2f}" for n in PHASES)
        print(f"{est:<10}{b[0] / a[0]:>12.2f}{b[1] / max(a[1], 1):>15.2f}{b[2] / max(a[2], 1):>10.2f}   {per_phase}")
    est = args.result_estimator if args.result_estimator in estimators else estimators[0]
    a, b = peaks(est, lo), peaks(est, hi)
    print(f"RESULT driver_peak_mb_{lo}={a[0]:.0f} driver_peak_mb_{hi}={b[0]:.0f} ratio={b[0] / a[0]:.2f} "
          f"jvm_peak_mb_{lo}={a[2]:.0f} jvm_peak_mb_{hi}={b[2]:.0f}")


if __name__ == "__main__":
    main()
