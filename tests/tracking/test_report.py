"""``tracking.report`` without Spark or MLflow: the description's parts, the estimator's lines, and the worst-groups
table, failure reasons and figures computed over 200k groups in bounded work."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from manymodels.tracking import report


def test_compose_description_replaces_one_part_and_keeps_the_other():
    legacy = "manymodels quality gate against no @champion yet\nquality gate PASSED: ok fraction 1.000"
    composed = report.compose_description(legacy, training="## Training run `a`\n\nbody")
    assert composed == "## Training run `a`\n\nbody\n\n" + legacy
    regated = report.compose_description(composed, gate=report.gate_section("quality gate FAILED"))
    assert regated.startswith("## Training run `a`") and regated.endswith("## Promotion gate\n\nquality gate FAILED")
    assert "PASSED" not in regated
    assert report.compose_description(None, gate=report.gate_section("x")) == "## Promotion gate\n\nx"
    long = report.compose_description("## Training run `b`\n" + "y" * 9000, gate=report.gate_section("kept"))
    assert len(long) <= report.MAX_DESCRIPTION and long.endswith("## Promotion gate\n\nkept")

def test_pipeline_steps_and_changed_params_are_described():
    lines = report.estimator_lines(Pipeline([("scale", StandardScaler(with_mean=False)),
                                             ("model", LogisticRegression(C=0.5))]))
    text = "\n".join(lines)
    assert lines[0] == "- `Pipeline` (sklearn)"
    assert "  - `steps.scale`: `StandardScaler` (sklearn)" in text and "with_mean=False" in text
    assert "  - `steps.model`: `LogisticRegression` (sklearn)" in text and "C=0.5" in text
    assert "max_iter" not in text  # defaults are left out




def big_metrics(n: int = 200_000, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    status = np.where(np.arange(n) % 50 == 7, "failed", np.where(np.arange(n) % 97 == 3, "skipped", "ok"))
    error = np.select([status == "failed", status == "skipped"],
                      ["ValueError in group k=1: bad\nTraceback ...", "3 rows with a label, fewer than min_rows=10"],
                      None)
    errors = pd.Series(error, dtype=object).where(status != "ok", None)
    errors[np.flatnonzero(status == "failed")[::2]] = "LinAlgError in group k=2: singular\n..."
    return pd.DataFrame({"k": np.arange(n), "status": status, "error": errors,
                         "n_rows": rng.integers(5, 5000, n), "holdout_rmse": np.where(status == "ok", rng.random(n),
                                                                                      np.nan)})


def test_report_over_200k_groups_is_bounded():
    metrics = big_metrics()
    worst = report.worst_groups(metrics, ["k"])
    assert len(worst) == report.WORST_GROUPS and (worst["status"].iloc[:report.WORST_FAILED] == "failed").all()
    ranked = worst.iloc[report.WORST_FAILED:]
    assert (ranked["status"] == "ok").all() and ranked["value"].is_monotonic_decreasing
    assert ranked["value"].iloc[0] == metrics["holdout_rmse"].max()
    assert worst["error"].iloc[0] in ("ValueError in group k=1: bad", "LinAlgError in group k=2: singular")
    reasons = report.failure_reasons(metrics)
    assert reasons.sum() == (metrics["status"] != "ok").sum()
    assert set(reasons.index) == {"failed: ValueError", "failed: LinAlgError", "skipped: fewer rows than min_rows"}
    fig = report.metric_vs_rows_figure(metrics)
    assert len(fig.axes[0].collections[0].get_offsets()) == report.SCATTER_POINTS  # a sample, not 200k points
    assert "a sample of 20,000" in fig.axes[0].get_title()
    none = report.failure_figure(report.failure_reasons(metrics[metrics["status"] == "ok"]))
    assert "no failed or skipped groups" in none.axes[0].texts[0].get_text()
    q = report.metric_quantiles(metrics)
    assert list(q.index) == ["holdout_rmse"] and 0.05 < q.loc["holdout_rmse", "p10"] < 0.15
