"""2,000 feature columns: the frame ``test_wide_inputs.py`` uses, and (run as a script by that test with
SPARK_REMOTE=local[2], in its own process) its checks under Spark Connect, printed as ``RESULT {json}``."""
import json
import sys
import time

import numpy as np
import pandas as pd

N_FEATURES = 2000
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
INF_COL, NAN_COL = "f1234", "f77"


def wide_rows(n_groups: int = 2, rows_per_group: int = 12, seed: int = 5) -> pd.DataFrame:
    """``g`` (the group), ``f0`` ... ``f1999`` (double) and ``y``: a linear target of the first features."""
    rng = np.random.default_rng(seed)
    n = n_groups * rows_per_group
    X = rng.normal(size=(n, N_FEATURES))
    frame = pd.DataFrame(X, columns=FEATURES)
    frame.insert(0, "g", np.repeat(np.arange(n_groups), rows_per_group))
    frame["y"] = X[:, :5].sum(axis=1) + rng.normal(scale=0.1, size=n)
    return frame


def with_inf_and_nans(frame: pd.DataFrame) -> pd.DataFrame:
    """One +inf in ``INF_COL`` (group 1) and NaN, the missing value, in three rows of ``NAN_COL``."""
    frame = frame.copy()
    frame.loc[frame.index[frame["g"] == 1][3], INF_COL] = np.inf
    frame.loc[frame.index[:3], NAN_COL] = np.nan
    return frame


def time_checks(bad) -> dict:
    """The two checks alone on the frame with an infinity: the per-group aggregate (run with the group
    statistics before every training) and the per-column count of the error path."""
    from manymodels.spark.checks import NONFINITE_COL, _count_columns, nonfinite_aggregate

    start = time.perf_counter()
    rows = bad.groupBy("g").agg(*nonfinite_aggregate(bad, FEATURES)).collect()
    middle = time.perf_counter()
    counts = {c: n for c, n in _count_columns(bad, FEATURES).items() if n}
    return {"per_group": {str(r["g"]): r[NONFINITE_COL] for r in rows}, "per_column": counts,
            "aggregate_seconds": round(middle - start, 2), "count_seconds": round(time.perf_counter() - middle, 2)}


def run_checks(spark, location: str) -> dict:
    """Train on the clean frame, then the frame with an infinity: the outcome of each and their timings."""
    from sklearn.linear_model import LinearRegression

    from manymodels.errors import InputError
    from manymodels.spark.training import train_per_group

    args = dict(group_cols=["g"], feature_cols=FEATURES, label_col="y", estimator=LinearRegression())
    clean = spark.createDataFrame(wide_rows())
    start = time.perf_counter()
    table = train_per_group(clean, location=f"{location}/clean", progress=False, **args)
    trained_s = time.perf_counter() - start
    bad = spark.createDataFrame(with_inf_and_nans(wide_rows()))
    start = time.perf_counter()
    try:
        train_per_group(bad, location=f"{location}/bad", progress=False, **args)
        message = None
    except InputError as e:
        message = str(e)
    return {"counts": table.counts, "train_seconds": round(trained_s, 2), "message": message,
            "refused_seconds": round(time.perf_counter() - start, 2), **time_checks(bad)}


if __name__ == "__main__":
    from manymodels.spark.session import get_spark, is_connect

    session = get_spark()
    result = {"connect": is_connect(session), **run_checks(session, sys.argv[1])}
    print("RESULT " + json.dumps(result))
    session.stop()
