"""Per-group limits (max_model_bytes, max_fit_seconds) and per-file training on files Spark splits."""
import bz2
import gzip
import re
import signal
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from pyspark import cloudpickle
from pyspark.sql import functions as F
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import LinearRegression
from sklearn.tree import DecisionTreeRegressor

from manymodels.core import model_bytes
from manymodels.core.checks import check_settings
from manymodels.core.fitting import GroupFitError, fit_arrays
from manymodels.core.retrain import spec_fingerprint
from manymodels.core.spec import TrainSpec
from manymodels.errors import InputError
from manymodels.settings import MODEL_BYTES_CEILING
from manymodels.spark.training import train_per_file, train_per_group

FEATURES = ["x0", "x1"]


class SlowRegressor(RegressorMixin, BaseEstimator):
    """Predicts the mean; a group of more than ``slow_above`` rows spins in Python for ``stall_seconds`` first."""

    def __init__(self, slow_above=100, stall_seconds=60.0):
        self.slow_above = slow_above
        self.stall_seconds = stall_seconds

    def fit(self, X, y):
        if len(y) > self.slow_above:
            deadline = time.monotonic() + self.stall_seconds
            while time.monotonic() < deadline:  # Python bytecode: an alarm can interrupt it
                pass
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X):
        return np.full(len(X), self.mean_)


# Spark's workers cannot import this module (the tests folder is not on their path): ship its classes by value,
# as Spark does for a class defined in a notebook.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def frame(sizes: dict, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.concat([pd.DataFrame({"g": g, "x0": rng.normal(size=n), "x1": rng.normal(size=n),
                                    "y": rng.normal(size=n)}) for g, n in sizes.items()], ignore_index=True)


def spec_for(estimator, **kw) -> TrainSpec:
    return TrainSpec(group_cols=("g",), feature_cols=tuple(FEATURES), label_col="y", estimator=estimator,
                     holdout_fraction=0.0, **kw)


def fit(pdf: pd.DataFrame, group: str, spec: TrainSpec) -> dict:
    part = pdf[pdf["g"] == group]
    return fit_arrays(group, part[FEATURES].to_numpy(), part["y"].to_numpy(), spec=spec)


def tree_sizes(pdf: pd.DataFrame) -> dict:
    """Serialized size of each group's full-depth tree (it grows with the group's rows), by the pure path."""
    spec = spec_for(DecisionTreeRegressor())
    return {g: len(fit(pdf, g, spec)["model"]) for g in pdf["g"].unique()}


# ---------------------------------------------------------------- without Spark

def test_a_model_over_max_model_bytes_fails_its_group_only():
    pdf = frame({"big": 300, "small": 20})
    sizes = tree_sizes(pdf)
    limit = (sizes["big"] + sizes["small"]) // 2
    assert sizes["small"] < limit < sizes["big"]
    spec = spec_for(DecisionTreeRegressor(), max_model_bytes=limit)
    big, small = fit(pdf, "big", spec), fit(pdf, "small", spec)
    assert small["status"] == "ok" and len(small["model"]) == sizes["small"]
    assert big["status"] == "failed" and big["model"] is None and big["model_sha256"] is None
    assert f"group g=big is {sizes['big']} bytes" in big["error"] and f"max_model_bytes={limit}" in big["error"]
    assert "Fix: raise max_model_bytes" in big["error"]
    with pytest.raises(GroupFitError, match=f"g=big.*{sizes['big']} bytes"):
        fit(pdf, "big", spec_for(DecisionTreeRegressor(), max_model_bytes=limit, failure_policy="raise"))


def test_a_fit_past_max_fit_seconds_is_interrupted_and_the_timer_is_restored():
    pdf = frame({"slow": 150, "fast": 20})
    spec = spec_for(SlowRegressor(), max_fit_seconds=0.3)
    fired = []

    def outer_alarm(*_):
        fired.append(1)

    outer = signal.signal(signal.SIGALRM, outer_alarm)  # someone else's alarm, due in 100 s
    signal.setitimer(signal.ITIMER_REAL, 100.0)
    try:
        slow = fit(pdf, "slow", spec)
        fast = fit(pdf, "fast", spec)
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        handler = signal.getsignal(signal.SIGALRM)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, outer)
    assert slow["status"] == "failed" and slow["model"] is None
    assert "FitTimeout" in slow["error"]
    assert "fit of group g=slow ran past max_fit_seconds=0.3 (interrupted" in slow["error"]
    assert "Fix: raise max_fit_seconds" in slow["error"] and 0.3 <= slow["fit_seconds"] < 50
    assert fast["status"] == "ok" and fast["error"] is None
    assert 50 < remaining <= 100 and handler is outer_alarm and not fired
    with pytest.raises(GroupFitError, match="g=slow ran past max_fit_seconds"):
        fit(pdf, "slow", spec_for(SlowRegressor(), max_fit_seconds=0.3, failure_policy="raise"))
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_outside_the_main_thread_the_limit_is_checked_when_the_fit_returns():
    pdf = frame({"slow": 150, "fast": 20})
    spec = spec_for(SlowRegressor(stall_seconds=0.5), max_fit_seconds=0.1)
    rows = {}
    worker = threading.Thread(target=lambda: rows.update({g: fit(pdf, g, spec) for g in ("slow", "fast")}))
    worker.start()
    worker.join(60)
    assert rows["slow"]["status"] == "failed" and "finished but was over the limit" in rows["slow"]["error"]
    assert rows["fast"]["status"] == "ok"


@pytest.mark.parametrize("setting, value, expected", [
    ("max_model_bytes", True, "positive integer"), ("max_model_bytes", float("nan"), "positive integer"),
    ("max_model_bytes", None, "positive integer"), ("max_model_bytes", 0, "positive integer"),
    ("max_model_bytes", 1.5e6, "positive integer"), ("max_model_bytes", MODEL_BYTES_CEILING + 1, "32-bit offsets"),
    ("max_fit_seconds", 0, "positive finite"), ("max_fit_seconds", -1.0, "positive finite"),
    ("max_fit_seconds", float("nan"), "positive finite"), ("max_fit_seconds", float("inf"), "positive finite"),
    ("max_fit_seconds", True, "positive finite"), ("max_fit_seconds", "10", "positive finite"),
])
def test_limits_are_validated(setting, value, expected):
    with pytest.raises(InputError, match=f"{setting}=.*{expected}"):
        check_settings(spec_for(LinearRegression(), **{setting: value}))


def test_valid_limits_pass_and_do_not_change_the_spec_fingerprint():
    base = spec_for(LinearRegression())
    for kw in ({"max_model_bytes": MODEL_BYTES_CEILING, "max_fit_seconds": 0.5}, {"max_fit_seconds": 3}):
        check_settings(spec_for(LinearRegression(), **kw))
        assert spec_fingerprint(spec_for(LinearRegression(), **kw)) == spec_fingerprint(base)


# ---------------------------------------------------------------- on Spark

def train(spark, pdf, tmp_path, estimator, **kw):
    return train_per_group(spark.createDataFrame(pdf), group_cols=["g"], feature_cols=FEATURES, label_col="y",
                           estimator=estimator, location=str(tmp_path / "table"), holdout_fraction=0.0, **kw)


@pytest.mark.spark
def test_spark_a_model_over_max_model_bytes_fails_only_its_group(spark, tmp_path):
    pdf = frame({"big": 300, "small_a": 20, "small_b": 25}, seed=1)
    sizes = tree_sizes(pdf)
    limit = (sizes["big"] + max(sizes["small_a"], sizes["small_b"])) // 2
    table = train(spark, pdf, tmp_path, DecisionTreeRegressor(), max_model_bytes=limit)
    got = table.read(spark).toPandas().set_index("g")
    assert table.counts == {"ok": 2, "failed": 1, "skipped": 0} and sorted(got.index) == ["big", "small_a", "small_b"]
    assert got.loc["big", "status"] == "failed" and got.loc["big", "model"] is None
    # the worker's pickle of the same tree may differ by a few bytes (string sharing): sizes agree to within 1%
    reported = int(re.search(r"group g=big is (\d+) bytes serialized", got.loc["big", "error"]).group(1))
    assert reported == pytest.approx(sizes["big"], rel=0.01) and f"max_model_bytes={limit}:" in got.loc["big", "error"]
    for g in ("small_a", "small_b"):
        assert got.loc[g, "status"] == "ok" and len(got.loc[g, "model"]) == pytest.approx(sizes[g], rel=0.01)


@pytest.mark.spark
def test_spark_a_fit_past_max_fit_seconds_fails_only_its_group(spark, tmp_path):
    pdf = frame({"slow": 150, "fast_a": 20, "fast_b": 30}, seed=2)
    table = train(spark, pdf, tmp_path, SlowRegressor(), max_fit_seconds=1)
    got = table.read(spark).toPandas().set_index("g")
    assert table.counts == {"ok": 2, "failed": 1, "skipped": 0} and sorted(got.index) == ["fast_a", "fast_b", "slow"]
    # "interrupted": the alarm stopped the fit in the Python worker, not the check after a 60 s fit
    assert "fit of group g=slow ran past max_fit_seconds=1 (interrupted" in got.loc["slow", "error"]
    assert got.loc[["fast_a", "fast_b"], "status"].eq("ok").all()


def write_csv(pdf: pd.DataFrame, path, opener=open):
    with opener(path, "wt") as fh:
        pdf.to_csv(fh, index=False)


@pytest.mark.spark
def test_per_file_training_gives_one_row_per_split_file(spark, tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "files"
    folder.mkdir()
    data = {name: pd.DataFrame(rng.normal(size=(n, 3)), columns=["x0", "x1", "y"])
            for name, n in [("plain.csv", 9000), ("packed.csv.bz2", 9000), ("a.csv.gz", 30), ("b.csv.gz", 40),
                            ("c.csv.gz", 50)]}
    write_csv(data["plain.csv"], folder / "plain.csv")
    write_csv(data["packed.csv.bz2"], folder / "packed.csv.bz2", lambda p, m: bz2.open(p, m, compresslevel=1))
    for name in ("a.csv.gz", "b.csv.gz", "c.csv.gz"):
        write_csv(data[name], folder / name, gzip.open)
    key, old = "spark.sql.files.maxPartitionBytes", spark.conf.get("spark.sql.files.maxPartitionBytes", None)
    spark.conf.set(key, "64k")
    try:
        for name in ("plain.csv", "packed.csv.bz2"):  # the case under test: Spark reads each in several parts
            parts = spark.read.option("header", "true").csv(str(folder / name)).select(F.spark_partition_id())
            assert parts.distinct().count() > 1, name
        table = train_per_file(spark, str(folder), feature_cols=FEATURES, label_col="y", estimator=LinearRegression(),
                               location=str(tmp_path / "file_models"), holdout_fraction=0.0)
    finally:
        if old is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, old)
    got = table.read(spark).toPandas().set_index("source_file")
    assert table.counts == {"ok": 5, "failed": 0, "skipped": 0} and sorted(got.index) == sorted(data)
    assert {name: got.loc[name, "n_rows"] for name in data} == {name: len(pdf) for name, pdf in data.items()}
    plain = data["plain.csv"]
    model = model_bytes.loads(got.loc["plain.csv", "model"], got.loc["plain.csv", "model_sha256"])
    np.testing.assert_allclose(model.coef_, LinearRegression().fit(plain[FEATURES], plain["y"]).coef_, rtol=1e-9)


def test_fit_output_is_sliced_so_no_arrow_batch_holds_2_gib_of_models():
    """Several models under max_model_bytes can still add up past what one Arrow binary array holds: the rows of
    one packed batch leave the worker in slices bounded by their model bytes."""
    from manymodels.core.fitting import by_model_bytes

    frame = pd.DataFrame({"model": [b"x" * 40, None, b"x" * 70, b"x" * 30, b"x" * 100, b"x" * 5]})
    slices = list(by_model_bytes(frame, limit=100))
    assert [len(s) for s in slices] == [2, 2, 1, 1]
    assert pd.concat(slices).equals(frame)
    assert all(sum(len(b) for b in s["model"] if b is not None) <= 100 for s in slices)
    assert [len(s) for s in by_model_bytes(frame, limit=10_000)] == [6]
