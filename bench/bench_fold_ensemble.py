"""Fold / sample ensembles: reproduce the published fold-ensemble study in one run.

Data: ``make_classification(n_samples=N, n_features=20, n_informative=10, n_redundant=5, n_repeated=5,
n_classes=2, n_clusters_per_class=4, flip_y=0.1, class_sep=0.75, random_state=123, shuffle=True)``, a 70/30
split (random_state=123), 5 folds, a gradient-boosting learner (HistGradientBoostingClassifier with its
defaults; CatBoost when it is installed). Measured, in this order, on one shared local Spark session:
  centralized    one model on all training rows; 5 fold models on 4/5 each, one after another (the study's
                 "centralized" figure is the mean accuracy of those 5 fold models)
  members        5 members, each on its own 1/5 sample, trained in parallel on Spark (one task per member)
  ensembles      mean, median, max of the members' probabilities; stacking (random forest on out-of-fold
                 predictions)
Timing: the centralized models run under a native-thread limit (``--threads``, default 1; ``1,all`` also times
all-core OpenMP, and the fastest setting is the baseline: on a 2-core machine shared with other processes,
all-core OpenMP spins and ran 5-7x slower than one thread here). Spark members get one thread per task (the
cores Spark gave the task). A small untimed ensemble is fitted first so Spark's Python workers are running,
and the training rows are cached in Spark before the members' timer starts (the baseline's are in numpy).
Printed as one table of accuracy and wall time next to the published figures, with a KDE plot of the
predicted probability per true class per method (PNG, logged to MLflow with the ensemble). The last line is
``RESULT n=<N> acc_centralized=... acc_mean=... acc_median=... acc_max=... acc_stacking=...
wall_members_s=... wall_centralized_s=...``.

Usage: python bench/bench_fold_ensemble.py [--n 1000000] [--members 5] [--master local[2]] [--threads 1,all] [--docs]
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from manymodels.spark.session import get_spark
from manymodels.studies.fold_ensemble import default_learner, format_study, run_study

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="rows generated (70%% train, 30%% test)")
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--sampling", default="disjoint", choices=["disjoint", "complement"])
    p.add_argument("--master", default="local[2]")
    p.add_argument("--learner", default=None, help="dotted class path (default: CatBoost if installed, else HGB)")
    p.add_argument("--experiment", default="manymodels-bench")
    p.add_argument("--threads", default="1", help="thread limits to time the centralized models with, e.g. 1,all; the "
                   "fastest is the baseline (on a loaded machine, all-core OpenMP can be much slower than 1 thread)")
    p.add_argument("--docs", action="store_true", help="copy the KDE plot to docs/fold_ensemble_kde.png")
    args = p.parse_args()

    learner = args.learner or default_learner()
    load_start = os.getloadavg()
    start = time.perf_counter()
    spark = get_spark(args.master, app_name="bench-fold-ensemble",
                      conf={"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
                            "spark.log.level": "ERROR"})
    session_s = time.perf_counter() - start
    result = run_study(spark, n_samples=str(args.n), n_members=str(args.members), sampling=args.sampling,
                       combine="mean", learner=learner, model_name="manymodels_fold_ensemble_bench",
                       alias="champion", experiment=args.experiment,
                       warm_up=True, compare="true",  # the bench times the centralized baselines too
                       centralized_threads=tuple(None if t == "all" else int(t) for t in args.threads.split(",")))
    total = time.perf_counter() - start
    acc, wall, info = result.accuracy, result.wall, result.ensemble.fit_info_
    print(f"\nfold-ensemble study: N={args.n:,} ({int(args.n * 0.7):,} train / {args.n - int(args.n * 0.7):,} test), "
          f"K={args.members}, sampling={args.sampling}, learner={learner}, Spark {args.master}")
    print(format_study(result).rsplit("\n", 1)[0])
    print(f"\nmembers' wall / centralized {args.members}-fold wall = {wall['members'] / wall['centralized_folds']:.2f}"
          f"   (centralized one model: {wall['centralized_one']:.1f} s)")
    print(f"accuracy: mean ensemble - centralized = {acc['mean'] - acc['centralized_folds']:+.4f}; "
          f"mean ensemble - one centralized model = {acc['mean'] - acc['centralized_one']:+.4f}")
    print(f"ensemble fit on Spark {wall['ensemble_fit']:.1f} s = members {info['wall_members_s']:.1f} s + "
          f"out-of-fold pass {info['wall_oof_s']:.1f} s + meta-model {info.get('wall_meta_s', 0):.1f} s "
          f"+ checks/transfer; training rows into Spark (cached) {wall['to_spark']:.1f} s; Spark session start "
          f"{session_s:.1f} s; whole run {total:.1f} s")
    print(f"load average (1 min) at start {load_start[0]:.2f}, at end {os.getloadavg()[0]:.2f} on {os.cpu_count()} "
          "cores shared with other processes")
    if args.docs:
        docs = ROOT / "docs"
        docs.mkdir(exist_ok=True)
        shutil.copyfile(result.kde_png, docs / "fold_ensemble_kde.png")
        print(f"plot copied to {docs / 'fold_ensemble_kde.png'}")
    print(result.result_line)


if __name__ == "__main__":
    main()
