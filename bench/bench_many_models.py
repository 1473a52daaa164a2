"""Per-group training speed: pure work vs the naive applyInPandas pattern vs manymodels, in one run.

For each panel size G (groups x ~200 rows x 5 features) and estimator it measures, after one shared
Spark session start (reported separately):
  (a) a plain pandas groupby loop fitting each group on one core (the pure work; limit = a / cores)
  (b) the naive pattern: groupBy(key).applyInPandas returning (key, rows, pickled model), Spark defaults
  (c) manymodels.train_per_group, including the atomic model-table write, without MLflow
  (d) (c) plus all MLflow logging and registration (local sqlite store)
and a Zipf-skewed panel of the same total rows against the uniform one. Every method reads the same
Parquet input, written by ``data.write_parquet`` in row groups Spark can split across the cores.
Every figure is the best of ``--repeat`` runs (default 5) for every method alike; the median of the runs
is printed beside it. The last line is
``RESULT efficiency_5000=... speedup_vs_naive_5000=... skew_ratio=... mlflow_models_per_s=...``
for the LinearRegression 5,000-group runs.

Usage: python bench/bench_many_models.py [--groups 1000,5000,20000] [--estimators linear,ridge]
"""
from __future__ import annotations

import argparse
import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path
from statistics import median

import pandas as pd
from _timing import timed  # bench/ is on sys.path when run as a script
from sklearn.linear_model import LinearRegression, Ridge

from manymodels import tracking
from manymodels.core.panel import feature_names, make_panel, write_parquet
from manymodels.core.spec import PanelSpec
from manymodels.spark.session import get_spark, local_cores
from manymodels.spark.training import train_per_group

ESTIMATORS = {"linear": LinearRegression, "ridge": Ridge}
KEYS = ["store", "item"]
FEATURES = feature_names(5)


# Best of 5 for every method alike. The first runs of a plan also warm Python workers and the JVM's JIT:
# measured 2026-11-21 (5,000 groups, 10 runs in a row), manymodels took 11.3, 3.9, 4.0, 3.3, 2.9, 2.8, 2.5,
# 2.6, 2.6 and 3.0 s, so a best of 3 often still measured warm-up. The median of the runs is printed too.
REPEAT = 5


def pandas_loop(rows: pd.DataFrame, make) -> int:
    n = 0
    for _, g in rows.groupby(KEYS, sort=False):
        make().fit(g[FEATURES], g["y"])
        n += 1
    return n


def naive(spark, path: str, make, out: str) -> None:
    """The blog pattern, Spark's default settings: one pandas DataFrame per group through Arrow."""
    def fit(key, pdf):
        model = make().fit(pdf[FEATURES], pdf["y"])
        return pd.DataFrame({"store": [key[0]], "item": [key[1]], "n_rows": [len(pdf)],
                             "model": [pickle.dumps(model)]})

    old = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "200")  # Spark's default
    try:
        (spark.read.parquet(path).groupBy(*KEYS)
         .applyInPandas(fit, "store long, item long, n_rows long, model binary")
         .write.mode("overwrite").parquet(out))
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", old)


def manymodels_train(spark, path: str, make, location: str, run_id: str):
    return train_per_group(spark.read.parquet(path), group_cols=KEYS, feature_cols=FEATURES, label_col="y",
                           estimator=make(), training_run_id=run_id, location=location)


def write_panel(spec: PanelSpec, root: Path) -> tuple[str, pd.DataFrame]:
    rows, _ = make_panel(spec)
    path = write_parquet(rows, root / f"panel_{spec.size_distribution}_{spec.n_groups}")
    return str(path), rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", default="1000,5000,20000")
    ap.add_argument("--estimators", default="linear,ridge")
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--repeat", type=int, default=REPEAT, help="runs per measurement; the best is reported")
    args = ap.parse_args()
    groups = [int(g) for g in args.groups.split(",")]
    work = Path(tempfile.mkdtemp(prefix="mm-bench-"))
    os.environ["MANYMODELS_HOME"] = str(work / "home")
    cores = local_cores(args.master) or os.cpu_count()

    t_session, spark = timed(lambda: get_spark(args.master, app_name="bench", conf={
        "spark.ui.showConsoleProgress": "false", "spark.log.level": "ERROR"}))
    ctx = tracking.configure(experiment="bench")
    spark.range(10).count()  # warm the JVM's first job outside every measurement
    print(f"machine: {os.cpu_count()} cores, master {args.master}, python {sys.version.split()[0]}; "
          f"session start {t_session:.1f} s (excluded); best of {args.repeat} runs per figure")
    print(f"{'workload':<34}{'groups':>7}{'seconds':>9}{'median':>8}{'models/s':>10}{'efficiency':>11}{'vs naive':>9}")
    results = {}
    for g in groups:
        spec = PanelSpec(n_groups=g, mean_rows=args.rows, n_features=5, size_distribution="uniform", seed=1)
        path, rows = write_panel(spec, work)
        for name in args.estimators.split(","):
            make = ESTIMATORS[name]
            ta, n = timed(lambda: pandas_loop(rows, make), args.repeat)
            ma = median(timed.runs)
            tb, _ = timed(lambda: naive(spark, path, make, str(work / "naive_out")), args.repeat)
            mb = median(timed.runs)
            tc, table = timed(lambda: manymodels_train(spark, path, make, str(work / f"t_{g}_{name}"),
                                                       f"b-{g}-{name}"), args.repeat)
            mc = median(timed.runs)
            tl, _ = timed(lambda: tracking.log_training(spark, table, ctx, name=f"bench_{name}_{g}"))
            td = tc + tl
            limit = ta / cores
            for label, secs, med in ((f"(a) pandas loop, 1 core [{name}]", ta, ma),
                                     (f"(b) naive applyInPandas [{name}]", tb, mb),
                                     (f"(c) manymodels, no MLflow [{name}]", tc, mc),
                                     (f"(d) manymodels + MLflow [{name}]", td, mc + tl)):
                print(f"{label:<34}{g:>7}{secs:>9.2f}{med:>8.2f}{n / secs:>10.0f}"
                      f"{limit / secs:>11.2f}{tb / secs:>9.2f}")
            results[(g, name)] = dict(a=ta, b=tb, c=tc, d=td, mlflow=tl, limit=limit, n=n)
        shutil.rmtree(path, ignore_errors=True)

    skew_ratio = float("nan")
    if 5000 in groups:
        zspec = PanelSpec(n_groups=5000, mean_rows=args.rows, n_features=5, size_distribution="zipf", seed=1)
        zpath, zrows = write_panel(zspec, work)
        sizes = zrows.groupby(KEYS).size()
        tz, _ = timed(lambda: manymodels_train(spark, zpath, LinearRegression, str(work / "t_zipf"), "b-zipf"),
                      args.repeat)
        skew_ratio = tz / results[(5000, "linear")]["c"]
        print(f"zipf panel: {len(zrows)} rows, largest group {sizes.max()} rows = {sizes.max() / sizes.median():.0f}x "
              f"the median; manymodels {tz:.2f} s vs uniform {results[(5000, 'linear')]['c']:.2f} s")
    key = (5000, "linear") if (5000, "linear") in results else next(iter(results))
    r = results[key]
    print(f"RESULT efficiency_5000={r['limit'] / r['c']:.2f} speedup_vs_naive_5000={r['b'] / r['c']:.2f} "
          f"skew_ratio={skew_ratio:.2f} mlflow_models_per_s={r['n'] / r['mlflow']:.0f}")
    spark.stop()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
