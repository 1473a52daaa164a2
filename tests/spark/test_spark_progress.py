"""The progress bar on a real training job: a tqdm bar (captured, not drawn) that reaches every group, and the
start and end lines on the "manymodels" logger."""
from __future__ import annotations

import io
import logging

import pytest
from sklearn.linear_model import LinearRegression
from tqdm import tqdm

from manymodels.settings import PROGRESS_BAR_ENV
from manymodels.spark import progress as P
from manymodels.spark.training import train_per_group

pytestmark = pytest.mark.spark


class Captured(tqdm):
    """A real tqdm bar drawn into a buffer; every bar made is kept to be read after the job."""

    made: list = []

    def __init__(self, *args, **kwargs):
        kwargs["file"] = io.StringIO()
        super().__init__(*args, **kwargs)
        Captured.made.append(self)


def test_training_with_the_bar_on_reaches_every_group(spark, small_panel, tmp_path, monkeypatch, caplog):
    spec, rows, _ = small_panel
    Captured.made = []
    monkeypatch.setenv(PROGRESS_BAR_ENV, "1")  # forced on: pytest's stderr is not a terminal
    monkeypatch.setattr(P, "bar_class", lambda: Captured)
    df = spark.createDataFrame(rows)
    with caplog.at_level(logging.INFO, logger="manymodels"):
        table = train_per_group(df, group_cols=["store", "item"], feature_cols=["x0", "x1", "x2"], label_col="y",
                                estimator=LinearRegression(), training_run_id="bar-1", tasks_per_core=2,
                                location=str(tmp_path / "table"))
    assert table.counts["ok"] == spec.n_groups
    (bar,) = Captured.made
    assert (bar.n, bar.total) == (spec.n_groups, spec.n_groups) and bar.unit == "group"
    assert f"{spec.n_groups}/{spec.n_groups}" in bar.fp.getvalue()  # what a terminal would have shown last
    lines = [r.getMessage() for r in caplog.records if r.name == "manymodels.progress"]
    assert lines[0].startswith(f"manymodels: training bar-1: {spec.n_groups} groups in ")
    assert lines[-1].startswith(f"manymodels: training bar-1: {table.plan_partitions}/{table.plan_partitions} "
                                f"tasks, >= {spec.n_groups} of {spec.n_groups} groups done")


def test_manymodels_progress_0_turns_the_bar_off(spark, small_panel, tmp_path, monkeypatch):
    _, rows, _ = small_panel
    Captured.made = []
    monkeypatch.setenv(PROGRESS_BAR_ENV, "0")
    monkeypatch.setattr(P, "bar_class", lambda: Captured)
    train_per_group(spark.createDataFrame(rows.head(200)), group_cols=["store", "item"],
                    feature_cols=["x0", "x1", "x2"], label_col="y", estimator=LinearRegression(),
                    location=str(tmp_path / "table"), min_rows=2)
    assert Captured.made == []
