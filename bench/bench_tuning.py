"""Hyperparameter search speed in two regimes, every method measured in the same run.

(i) fit-heavy: make_classification(20000, 20, random_state=0), 12 parameter sets x 3 folds of
    RandomForestClassifier(random_state=0): sequential GridSearchCV (n_jobs=1), GridSearchCV
    (n_jobs=2), the cross-join recipe (data cross-joined with a (params, fold) table, then
    groupBy(param, fold).applyInPandas), and manymodels' search.
(ii) data-heavy: make_classification(500000, 20, random_state=0), 12 parameter sets x 3 folds of
    LogisticRegression: the cross-join recipe, manymodels, and GridSearchCV (n_jobs=2) for reference.

Every method starts from the same pandas frame in driver memory, uses the same folds (sklearn's
default StratifiedKFold(3)), scores accuracy and skips the final refit (GridSearchCV refit=False),
so each measures the search itself. BLAS/OpenMP threads are pinned to 1 so a task uses one core.
The Spark session start (plus one tiny job that starts the Python workers) is reported separately.
efficiency_fit_heavy = (sequential seconds / cores) / manymodels seconds.
Last line: RESULT efficiency_fit_heavy=<x> speedup_vs_gridsearch_njobs2=<y>
           speedup_vs_crossjoin_data_heavy=<z> same_best=<true|false>

Usage: python bench/bench_tuning.py [--fit-rows 20000] [--data-rows 500000] [--repeat 1]
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _timing import timed  # noqa: E402 - bench/ is on sys.path when run as a script
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import accuracy_score  # noqa: E402
from sklearn.model_selection import GridSearchCV, ParameterGrid, StratifiedKFold  # noqa: E402

from manymodels.spark.search import search  # noqa: E402
from manymodels.spark.session import get_spark, local_cores  # noqa: E402

FIT_GRID = {"n_estimators": [20, 40, 60], "max_depth": [8, None], "max_features": ["sqrt", 0.5]}
DATA_GRID = {"C": [0.001, 0.01, 0.1, 1.0, 10.0, 100.0], "fit_intercept": [True, False]}
FOLDS = 3
MASTER = "local[2]"


def frame(n_rows: int) -> tuple[pd.DataFrame, list[str]]:
    X, y = make_classification(n_rows, 20, random_state=0)
    features = [f"x{i}" for i in range(X.shape[1])]
    pdf = pd.DataFrame(X, columns=features)
    pdf["y"] = y
    return pdf, features


def gridsearch(pdf, features, est, grid, n_jobs):
    gs = GridSearchCV(est, grid, cv=FOLDS, scoring="accuracy", n_jobs=n_jobs, refit=False)
    gs.fit(pdf[features].to_numpy(), pdf["y"].to_numpy())
    return gs.best_params_, float(gs.best_score_)


def crossjoin(spark, pdf, features, est, grid):
    """The common recipe: every (params, fold) row joined with a full copy of the data, one group each."""
    candidates = list(ParameterGrid(grid))
    fold_of_row = np.empty(len(pdf), dtype=np.int64)
    for f, (_, test) in enumerate(StratifiedKFold(FOLDS).split(pdf[features], pdf["y"])):
        fold_of_row[test] = f
    data = spark.createDataFrame(pdf.assign(row_id=np.arange(len(pdf)), fold_id=fold_of_row))
    params = spark.createDataFrame(pd.DataFrame({"param_id": range(len(candidates)),
                                                 "params": [json.dumps(c) for c in candidates]}))
    tasks = params.crossJoin(spark.range(FOLDS).withColumnRenamed("id", "fold"))

    def fit(pdf_group: pd.DataFrame) -> pd.DataFrame:
        g = pdf_group.sort_values("row_id")  # shuffle order is arbitrary: restore the input's order
        test = (g["fold_id"] == g["fold"].iloc[0]).to_numpy()
        X, y = g[features].to_numpy(), g["y"].to_numpy()
        model = clone(est).set_params(**json.loads(g["params"].iloc[0])).fit(X[~test], y[~test])
        return pd.DataFrame({"param_id": [g["param_id"].iloc[0]], "fold": [g["fold"].iloc[0]],
                             "score": [accuracy_score(y[test], model.predict(X[test]))]})

    scores = (data.crossJoin(tasks).groupBy("param_id", "fold")
              .applyInPandas(fit, "param_id long, fold long, score double").toPandas())
    means = scores.groupby("param_id")["score"].mean().reindex(range(len(candidates))).to_numpy()
    best = int(np.argmax(means))  # first of ties, as sklearn
    return candidates[best], float(means[best])


def manymodels_search(spark, pdf, features, est, grid):
    result = search(spark, pdf, label_col="y", feature_cols=features, estimator=est, param_grid=grid, cv=FOLDS,
                    scoring="accuracy", refit_best=False)
    tasks = result.tasks.assign(busy=result.tasks["fit_time"] + result.tasks["score_time"],
                                phase=(result.tasks["fold"] >= 2).map({False: 1, True: 2}),
                                partition=result.tasks["task_attempt"].str.extract(r"partition=(\d+)")[0])
    busy = tasks.groupby(["phase", "partition"])["busy"].sum().round(1).to_dict()
    print(f"    manymodels: fit+score seconds per (phase, partition) {busy}; "
          f"{result.timings['search']:.1f} s wall", flush=True)
    return result.best_params, result.best_score


def run_regime(name, methods, repeat):
    rows = []
    for method, fn in methods:
        load_before = os.getloadavg()[0]
        seconds, (params, score) = timed(fn, repeat)
        load = f"{load_before:.1f}->{os.getloadavg()[0]:.1f}"  # other processes' load shows up here
        rows.append({"regime": name, "method": method, "seconds": round(seconds, 2), "best_score": score,
                     "load_1min": load, "best_params": json.dumps(params, sort_keys=True)})
        print(f"  {name:10s} {method:28s} {seconds:8.2f} s  best {score:.6f} load {load:10s} "
              f"{json.dumps(params, sort_keys=True)}", flush=True)
    return pd.DataFrame(rows)


def agree(table: pd.DataFrame) -> bool:
    return table["best_params"].nunique() == 1 and float(np.ptp(table["best_score"].to_numpy())) <= 1e-9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit-rows", type=int, default=20000)
    ap.add_argument("--data-rows", type=int, default=500000)
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs for every method alike")
    args = ap.parse_args()
    cores = local_cores(MASTER)

    start = time.perf_counter()
    spark = get_spark(MASTER, app_name="bench-tuning", conf={"spark.ui.enabled": "false",
                                                             "spark.ui.showConsoleProgress": "false"})
    spark.range(0, cores, 1, cores).mapInPandas(_warm, "id long").count()  # start the Python workers
    print(f"session start (excluded): {time.perf_counter() - start:.1f} s, {MASTER}, "
          f"shuffle partitions {spark.conf.get('spark.sql.shuffle.partitions')}", flush=True)

    pdf, feats = frame(args.fit_rows)
    rf = RandomForestClassifier(random_state=0)
    print(f"(i) fit-heavy: {args.fit_rows} rows x 20, {len(ParameterGrid(FIT_GRID))} sets x {FOLDS} folds, "
          f"RandomForestClassifier {FIT_GRID}", flush=True)
    fit_heavy = run_regime("fit-heavy", [
        ("GridSearchCV n_jobs=1", lambda: gridsearch(pdf, feats, rf, FIT_GRID, 1)),
        ("GridSearchCV n_jobs=2", lambda: gridsearch(pdf, feats, rf, FIT_GRID, 2)),
        ("cross join + applyInPandas", lambda: crossjoin(spark, pdf, feats, rf, FIT_GRID)),
        ("manymodels search", lambda: manymodels_search(spark, pdf, feats, rf, FIT_GRID)),
    ], args.repeat)

    pdf, feats = frame(args.data_rows)
    lr = LogisticRegression(max_iter=200)
    print(f"(ii) data-heavy: {args.data_rows} rows x 20, {len(ParameterGrid(DATA_GRID))} sets x {FOLDS} folds, "
          f"LogisticRegression {DATA_GRID}", flush=True)
    data_heavy = run_regime("data-heavy", [
        ("cross join + applyInPandas", lambda: crossjoin(spark, pdf, feats, lr, DATA_GRID)),
        ("manymodels search", lambda: manymodels_search(spark, pdf, feats, lr, DATA_GRID)),
        ("GridSearchCV n_jobs=2 (ref)", lambda: gridsearch(pdf, feats, lr, DATA_GRID, 2)),
    ], args.repeat)

    table = pd.concat([fit_heavy, data_heavy], ignore_index=True)
    print()
    print(table.to_string(index=False, max_colwidth=70))
    sec = {(r.regime, r.method): r.seconds for r in table.itertuples()}
    mm_fit = sec[("fit-heavy", "manymodels search")]
    efficiency = (sec[("fit-heavy", "GridSearchCV n_jobs=1")] / cores) / mm_fit
    vs_njobs2 = sec[("fit-heavy", "GridSearchCV n_jobs=2")] / mm_fit
    vs_cross = sec[("data-heavy", "cross join + applyInPandas")] / sec[("data-heavy", "manymodels search")]
    same = agree(fit_heavy) and agree(data_heavy)
    print(f"\n2-core limit (sequential / {cores}): {sec[('fit-heavy', 'GridSearchCV n_jobs=1')] / cores:.1f} s; "
          f"load average at the end: {os.getloadavg()[0]:.2f} (the CPU is shared with other processes)")
    spark.stop()
    print(f"RESULT efficiency_fit_heavy={efficiency:.2f} speedup_vs_gridsearch_njobs2={vs_njobs2:.2f} "
          f"speedup_vs_crossjoin_data_heavy={vs_cross:.2f} same_best={'true' if same else 'false'}")


def _warm(batches):
    import sklearn.ensemble  # noqa: F401 - the import a worker pays once
    import sklearn.linear_model  # noqa: F401

    import manymodels.core.search  # noqa: F401

    for batch in batches:
        yield batch


if __name__ == "__main__":
    main()
