"""Batch inference speed: one big model and thousands of per-group models, against the common recipes, in one run.

(i) One model (a 100-iteration HistGradientBoostingClassifier on make_classification(random_state=0), 20 features)
    over ``--rows`` cached rows (default 200,000 and 1,000,000): a row-at-a-time Python UDF (on a subsample,
    extrapolated), a scalar pandas UDF that unpickles the model in every batch, ``predict_batch_udf``,
    ``mlflow.pyfunc.spark_udf`` (the model logged to the local sqlite store), ``manymodels.score_single`` and the
    limit: ``model.predict`` on the same rows already in memory as numpy on the driver (all cores).
(ii) Per-group scoring of ``--groups`` groups x 200 rows (5 features) with the LinearRegression models of a training
    run: the naive recipe (join each row with its group's pickled model, unpickle in ``groupBy(key).applyInPandas``),
    the registered router through ``mlflow.pyfunc.spark_udf`` and ``manymodels.score_per_group``; plus the most
    loads of one model in one Python worker for manymodels, counted on a fresh model set (cold workers).
(iii) Seconds per input size (``--sizes``) for a plain Python loop (one row per predict call), the row UDF, the
    pandas UDF and manymodels, plotted (log scales) to docs/batch_inference_sizes.png.

Every Spark figure is a full write of the scored output to the ``noop`` sink over a cached, counted input; every
figure is the best of ``--repeat`` runs (default 3: the first runs of a plan still pay the JVM's warm-up); for (i)
the median of the runs is printed too. The session start is excluded and printed separately.
Last line: ``RESULT single_rows_per_s_1m=... single_vs_limit=... speedup_vs_spark_udf=...
per_group_speedup_vs_naive=... max_loads_per_model_per_worker=...``.

Usage: python bench/bench_inference.py [--rows 200000,1000000] [--groups 5000]
       [--sizes 100,500,1000,1500,2000,2500,3000,100000] [--repeat 3]
Smoke test: python bench/bench_inference.py --rows 20000,50000 --groups 200 --sizes 100,500,5000 --repeat 1
"""
from __future__ import annotations

import argparse
import os
import pickle
import shutil
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from statistics import median

import numpy as np
import pandas as pd
from _timing import timed  # bench/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
KEYS = ["store", "item"]
SUBSAMPLE = 2000  # rows the row-at-a-time recipes really score before extrapolating


def noop(df) -> None:
    """Compute every output column: a full write to the noop sink."""
    df.write.format("noop").mode("overwrite").save()


def cached(spark, pdf: pd.DataFrame, partitions: int):
    df = spark.createDataFrame(pdf).repartition(partitions).cache()
    assert df.count() == len(pdf)
    return df


# ---------------------------------------------------------------- the recipes, one model

def row_udf(df, model, features):
    from pyspark.sql import functions as F

    def predict(*xs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(model.predict(np.array([xs], dtype="float64"))[0])

    return df.select(F.udf(predict, "double")(*features).alias("prediction"))


def pandas_udf_per_batch(df, model, features):
    from pyspark.sql.functions import pandas_udf

    blob = pickle.dumps(model)

    @pandas_udf("double")
    def predict(*cols: pd.Series) -> pd.Series:
        est = pickle.loads(blob)  # the common recipe: unpickled in every batch
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pd.Series(est.predict(np.column_stack(cols)).astype("float64"))

    return df.select(predict(*features).alias("prediction"))


def predict_batch(df, model, features, batch_size: int = 10000):
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType

    blob = pickle.dumps(model)

    def make_predict_fn():
        est = pickle.loads(blob)  # once per Python worker (predict_batch_udf caches it)

        def predict(X: np.ndarray) -> np.ndarray:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return est.predict(X).astype("float64")

        return predict

    udf = predict_batch_udf(make_predict_fn, return_type=DoubleType(), batch_size=batch_size)
    return df.select(udf(F.struct(*features)).alias("prediction"))


def mlflow_udf(spark, df, uri, features, result_type="double"):
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    udf = mlflow.pyfunc.spark_udf(spark, uri, result_type=result_type, env_manager="local")
    return df.select(udf(F.struct(*features)).alias("prediction"))


def python_loop(model, X: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(len(X)):
            model.predict(X[i:i + 1])


def limit(model, X: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.predict(X)


# ---------------------------------------------------------------- per-group recipes

def naive_per_group(df, model_df, features):
    """Join every row with its group's pickled model; unpickle it inside groupBy(key).applyInPandas."""
    def score(pdf: pd.DataFrame) -> pd.DataFrame:
        est = pickle.loads(pdf["model"].iloc[0])
        return pd.DataFrame({"store": pdf["store"], "item": pdf["item"],
                             "prediction": est.predict(pdf[features].to_numpy(dtype="float64"))})

    return (df.join(model_df, KEYS).groupBy(*KEYS)
            .applyInPandas(score, "store long, item long, prediction double"))


def max_loads(folder: Path) -> tuple[int, int, int]:
    """(most loads of one model in one worker, workers that logged, distinct models loaded)."""
    per_worker = [Counter(p.read_text().split()) for p in folder.glob("*.log")]
    if not per_worker:
        return 0, 0, 0
    return (max(c for counts in per_worker for c in counts.values()), len(per_worker),
            len(set().union(*per_worker)))


# ---------------------------------------------------------------- plot

def plot(sizes, seconds: dict, extrapolated: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for (label, secs), marker in zip(seconds.items(), "osD^v"):
        ax.plot(sizes, secs, marker=marker, label=label)
        for n, s in zip(sizes, secs):
            if n in extrapolated.get(label, ()):
                ax.annotate("extrapolated", (n, s), textcoords="offset points", xytext=(-70, 6), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows scored")
    ax.set_ylabel("seconds (best of runs)")
    ax.set_title("Batch inference, HistGradientBoostingClassifier (100 iter., 20 features), local[2]")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="200000,1000000", help="single-model input sizes")
    ap.add_argument("--groups", type=int, default=5000, help="per-group panel: groups x 200 rows")
    ap.add_argument("--sizes", default="100,500,1000,1500,2000,2500,3000,100000", help="sizes of the plot")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is reported")
    ap.add_argument("--plot", default=str(REPO / "docs" / "batch_inference_sizes.png"))
    args = ap.parse_args()
    rows_list = [int(r) for r in args.rows.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="mm-bench-inference-"))
    os.environ["MANYMODELS_HOME"] = str(work / "home")

    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LinearRegression

    from manymodels import tracking
    from manymodels.api import score_per_group, score_single
    from manymodels.core.panel import feature_names, make_panel
    from manymodels.core.spec import PanelSpec
    from manymodels.spark.session import get_spark, local_cores
    from manymodels.spark.training import train_per_group

    cores = local_cores(args.master) or os.cpu_count()
    load_before = os.getloadavg()
    t_session, spark = timed(lambda: get_spark(args.master, app_name="bench-inference", conf={
        "spark.ui.showConsoleProgress": "false", "spark.log.level": "ERROR"}))
    ctx = tracking.configure(experiment="bench-inference")
    spark.range(10).count()  # the JVM's first job, outside every measurement
    parts = 2 * cores
    print(f"machine: {os.cpu_count()} cores, master {args.master}, python {sys.version.split()[0]}, load average "
          f"{load_before[0]:.1f} at start; session start {t_session:.1f} s (excluded); best of {args.repeat} runs; "
          f"Arrow batch {spark.conf.get('spark.sql.execution.arrow.maxRecordsPerBatch')} rows (byte cap "
          f"{spark.conf.get('spark.sql.execution.arrow.maxBytesPerBatch')}); "
          f"inputs cached in {parts} partitions")

    # ------------------------------------------------------------ (i) one model
    n_max = max([*rows_list, *sizes])
    features = [f"f{i}" for i in range(20)]
    X, y = make_classification(n_samples=n_max, n_features=20, n_informative=10, random_state=0)
    X_df = pd.DataFrame(X, columns=features)
    n_fit = min(100_000, n_max)
    t_fit, model = timed(lambda: HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=0)
                         .fit(X_df.iloc[:n_fit], y[:n_fit]))
    assert model.n_iter_ == 100
    logged = tracking.log_estimator(model, ctx, run_key="bench-single", name="bench_single",
                                    input_example=X_df.head(5), serialization_format="cloudpickle")
    print(f"\n(i) one model: HistGradientBoostingClassifier(max_iter=100) fitted on {n_fit} rows in {t_fit:.1f} s; "
          f"logged as {logged.model_uri}")
    print(f"{'recipe':<44}{'rows':>10}{'seconds':>9}{'rows/s':>11}{'vs limit':>9}"
          f"{'median s':>9}{'median vs limit':>16}")
    single, medians = {}, {}
    sub = cached(spark, X_df.iloc[:SUBSAMPLE], parts)
    t_row_sub, _ = timed(lambda: noop(row_udf(sub, model, features)), args.repeat)
    row_rate = SUBSAMPLE / t_row_sub
    for n in rows_list:
        df = cached(spark, X_df.iloc[:n], parts)
        Xn = X[:n]
        res, med = {}, {}

        def measure(label, fn):
            res[label] = n / timed(fn, args.repeat)[0]
            med[label] = n / median(timed.runs)

        measure("limit: model.predict, numpy on the driver", lambda: limit(model, Xn))
        res[f"row UDF (extrapolated from {SUBSAMPLE} rows)"] = med[f"row UDF (extrapolated from {SUBSAMPLE} rows)"] \
            = row_rate
        measure("scalar pandas UDF, unpickle per batch", lambda: noop(pandas_udf_per_batch(df, model, features)))
        measure("pyspark predict_batch_udf", lambda: noop(predict_batch(df, model, features)))
        measure("mlflow.pyfunc.spark_udf", lambda: noop(mlflow_udf(spark, df, logged.model_uri, features)))
        measure("manymodels score_single", lambda: noop(score_single(df, model)))
        lim, mlim = res["limit: model.predict, numpy on the driver"], med["limit: model.predict, numpy on the driver"]
        for label, rate in res.items():
            print(f"{label:<44}{n:>10}{n / rate:>9.2f}{rate:>11.0f}{rate / lim:>9.2f}{n / med[label]:>9.2f}"
                  f"{med[label] / mlim:>16.2f}")
        single[n], medians[n] = res, med
        df.unpersist()
    sub.unpersist()

    # ------------------------------------------------------------ (ii) per-group models
    spec = PanelSpec(n_groups=args.groups, mean_rows=200, size_distribution="uniform")
    panel, _ = make_panel(spec)
    pfeatures = feature_names(spec.n_features)
    train_df = spark.createDataFrame(panel)
    t_train, table = timed(lambda: train_per_group(train_df, group_cols=KEYS, feature_cols=pfeatures, label_col="y",
                                                   estimator=LinearRegression(), training_run_id="bench-groups",
                                                   location=str(work / "table"), progress=False))
    t_log, router = timed(lambda: tracking.log_training(spark, table, ctx, name="bench_router"))
    # rows to score arrive in no particular group order (as new data usually does)
    to_score = panel.drop(columns=["y"]).sample(frac=1.0, random_state=0).reset_index(drop=True)
    sdf = cached(spark, to_score, parts)
    n_rows = len(to_score)
    print(f"\n(ii) per group: {args.groups} groups x 200 rows = {n_rows} rows, {len(pfeatures)} features, "
          f"LinearRegression; trained in {t_train:.1f} s, logged + registered in {t_log:.1f} s ({router.model_uri}); "
          f"rows to score shuffled")
    model_df = table.read(spark).where("status = 'ok'").select(*KEYS, "model")
    staging = work / "staging"
    per_group = {}
    per_group["naive: join pickled model + applyInPandas"] = timed(
        lambda: noop(naive_per_group(sdf, model_df, pfeatures)), args.repeat)[0]
    router_type = "store long, item long, prediction double, status string, error string"
    per_group["registered router via mlflow spark_udf"] = timed(
        lambda: noop(mlflow_udf(spark, sdf, router.model_uri, [*KEYS, *pfeatures], router_type)), args.repeat)[0]
    per_group["manymodels score_per_group (router alias)"] = timed(
        lambda: noop(score_per_group(sdf, router.model_uri, staging_dir=str(staging))), args.repeat)[0]
    # loads per model per worker: a fresh model set no Python worker has seen
    fresh = train_per_group(spark.createDataFrame(panel.assign(y=panel["y"] * 3.0)), group_cols=KEYS,
                            feature_cols=pfeatures, label_col="y", estimator=LinearRegression(),
                            training_run_id="bench-groups-fresh", location=str(work / "fresh"), progress=False)
    log = work / "loads"
    log.mkdir()
    t_cold, _ = timed(lambda: noop(score_per_group(sdf, fresh, staging_dir=str(staging), load_log=str(log))))
    t_warm, _ = timed(lambda: noop(score_per_group(sdf, fresh, staging_dir=str(staging), load_log=str(log))))
    most, workers, distinct = max_loads(log)
    naive_s = per_group["naive: join pickled model + applyInPandas"]
    print(f"{'recipe':<48}{'seconds':>9}{'rows/s':>11}{'vs naive':>9}")
    for label, secs in per_group.items():
        print(f"{label:<48}{secs:>9.2f}{n_rows / secs:>11.0f}{naive_s / secs:>9.2f}")
    print(f"{'manymodels, fresh models (cold workers), 1 run':<48}{t_cold:>9.2f}{n_rows / t_cold:>11.0f}"
          f"{naive_s / t_cold:>9.2f}")
    print(f"{'manymodels, same models again (warm), 1 run':<48}{t_warm:>9.2f}{n_rows / t_warm:>11.0f}"
          f"{naive_s / t_warm:>9.2f}")
    print(f"model loads (fresh set, two passes): {workers} Python workers loaded {distinct} distinct models of "
          f"{fresh.counts.get('ok', '?')}; most loads of one model in one worker = {most}")
    sdf.unpersist()

    # ------------------------------------------------------------ (iii) seconds per input size
    curves = {"plain Python loop (1 row per predict)": [], "row UDF": [], "scalar pandas UDF (unpickle per batch)": [],
              "manymodels score_single": []}
    extrapolated: dict[str, list] = {}
    cap = 3000  # the row-at-a-time recipes score at most this many rows; larger sizes are extrapolated
    print(f"\n(iii) seconds per input size (one model as in (i)); '*' = extrapolated from {cap} rows")
    print(f"{'rows':>8}" + "".join(f"{label[:24]:>26}" for label in curves))
    for n in sizes:
        df = cached(spark, X_df.iloc[:n], min(parts, max(1, n // 100)))
        marks = {}
        m = min(n, cap)
        small = df if m == n else cached(spark, X_df.iloc[:m], min(parts, max(1, m // 100)))
        for label, fn in (("plain Python loop (1 row per predict)", lambda: python_loop(model, X[:m])),
                          ("row UDF", lambda: noop(row_udf(small, model, features)))):
            curves[label].append(timed(fn, args.repeat)[0] * n / m)
            if m < n:
                extrapolated.setdefault(label, []).append(n)
                marks[label] = "*"
        if m < n:
            small.unpersist()
        curves["scalar pandas UDF (unpickle per batch)"].append(
            timed(lambda: noop(pandas_udf_per_batch(df, model, features)), args.repeat)[0])
        curves["manymodels score_single"].append(timed(lambda: noop(score_single(df, model)), args.repeat)[0])
        print(f"{n:>8}" + "".join(f"{curves[label][-1]:>25.3f}{marks.get(label, ' ')}" for label in curves))
        df.unpersist()
    plot(sizes, curves, extrapolated, Path(args.plot))
    print(f"plot: {args.plot}")

    load_after = os.getloadavg()
    print(f"load average {load_after[0]:.1f} / {load_after[1]:.1f} / {load_after[2]:.1f} at the end "
          f"({cores} cores for Spark; other processes share the machine)")
    big = max(rows_list)
    r, m = single[big], medians[big]
    mm = r["manymodels score_single"]
    print(f"by the medians of the runs at {big} rows: single_vs_limit="
          f"{m['manymodels score_single'] / m['limit: model.predict, numpy on the driver']:.2f} speedup_vs_spark_udf="
          f"{m['manymodels score_single'] / m['mlflow.pyfunc.spark_udf']:.2f}")
    print(f"RESULT single_rows_per_s_1m={mm:.0f} "
          f"single_vs_limit={mm / r['limit: model.predict, numpy on the driver']:.2f} "
          f"speedup_vs_spark_udf={mm / r['mlflow.pyfunc.spark_udf']:.2f} "
          f"per_group_speedup_vs_naive={naive_s / per_group['manymodels score_per_group (router alias)']:.2f} "
          f"max_loads_per_model_per_worker={most}")
    spark.stop()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
