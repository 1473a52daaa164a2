"""The champion/challenger promotion gate (core/promotion.py), pure: per-group metrics frames in, a verdict out."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manymodels.core.promotion import (
    GateThresholds,
    default_metric,
    evaluate,
    metric_direction,
    ok_fraction,
    relative_change,
)
from manymodels.core.schema import METRIC_COLUMNS
from manymodels.errors import InputError


def frame(values, status=None, metric="holdout_rmse", stores=None) -> pd.DataFrame:
    """A group_metrics frame: keys store/item, status, then the metric columns (``metric`` holds ``values``)."""
    n = len(values)
    stores = list(range(n)) if stores is None else stores
    out = pd.DataFrame({"store": stores, "item": [1] * n, "status": status or ["ok"] * n, "error": None})
    for column in METRIC_COLUMNS:
        out[column] = np.nan
    out[metric] = np.asarray(values, dtype="float64")
    return out


LOOSE = GateThresholds(min_ok_fraction=0.0)


def test_an_equal_challenger_passes_with_every_figure():
    champion = frame([1.0, 2.0, 3.0, 4.0])
    verdict = evaluate(champion.copy(), champion)
    assert verdict.passed and verdict.reasons == [] and verdict.compared
    assert (verdict.metric, verdict.direction) == ("holdout_rmse", "lower")
    assert (verdict.shared_groups, verdict.challenger_ok_groups, verdict.shared_fraction) == (4, 4, 1.0)
    assert verdict.median_champion == verdict.median_challenger == 2.5
    assert verdict.relative_change == 0.0 and verdict.worse_fraction == 0.0 and verdict.ok_fraction == 1.0
    assert "quality gate PASSED" in verdict.summary() and "holdout_rmse (lower is better)" in verdict.summary()


def test_a_worse_median_fails_naming_the_threshold():
    verdict = evaluate(frame([1.1, 2.2, 3.3, 4.4]), frame([1.0, 2.0, 3.0, 4.0]))
    assert not verdict.passed
    assert verdict.relative_change == pytest.approx(0.1) and verdict.worse_fraction == 1.0
    assert any("max_median_worse 0.05" in r for r in verdict.reasons)
    assert any("worse on 1.000 of the shared groups > max_worse_fraction 0.6" in r for r in verdict.reasons)
    assert "quality gate FAILED" in verdict.summary()


def test_a_tolerance_lets_a_slightly_worse_median_through():
    champion, challenger = frame([1.0, 2.0, 3.0, 4.0]), frame([1.0, 2.0, 3.1, 4.1])
    assert evaluate(challenger, champion).passed  # the default tolerates 5 percent on the median
    strict = GateThresholds(max_median_worse=0.0, max_worse_fraction=0.6)
    assert not evaluate(challenger, champion, thresholds=strict).passed


def test_higher_is_better_for_accuracy_and_the_default_metric_follows_the_task():
    champion = frame([0.7, 0.8, 0.9], metric="holdout_accuracy")
    better = frame([0.8, 0.9, 0.95], metric="holdout_accuracy")
    verdict = evaluate(better, champion)
    assert verdict.passed and (verdict.metric, verdict.direction) == ("holdout_accuracy", "higher")
    assert not evaluate(champion, better).passed


def test_no_champion_checks_the_ok_fraction_only():
    challenger = frame([1.0] * 10, status=["ok"] * 9 + ["failed"])
    first = evaluate(challenger, None, thresholds=GateThresholds(min_ok_fraction=0.9))
    assert first.passed and not first.compared and first.ok_fraction == 0.9
    assert "no champion to compare with" in first.summary()
    refused = evaluate(challenger, None)
    assert not refused.passed and "ok fraction 0.900 < min_ok_fraction 0.95" in refused.reasons[0]


def test_skipped_groups_do_not_count_in_the_ok_fraction():
    assert ok_fraction(frame([1.0] * 4, status=["ok", "ok", "skipped", "failed"])) == pytest.approx(2 / 3)
    assert ok_fraction(frame([1.0], status=["skipped"])) == 0.0


def test_only_groups_ok_in_both_runs_are_compared():
    champion = frame([1.0, 1.0, 1.0, 1.0], status=["ok", "ok", "failed", "ok"])
    challenger = frame([1.0, 1.0, 1.0, 9.0], status=["ok", "ok", "ok", "failed"])
    verdict = evaluate(challenger, champion, thresholds=LOOSE)
    assert verdict.shared_groups == 2 and verdict.challenger_ok_groups == 3 and verdict.passed


def test_too_few_shared_groups_fail():
    champion = frame([1.0] * 4, stores=[0, 1, 2, 3])
    challenger = frame([1.0] * 4, stores=[3, 4, 5, 6])
    verdict = evaluate(challenger, champion)
    assert not verdict.passed and verdict.shared_fraction == 0.25
    assert "min_shared_fraction 0.5" in verdict.reasons[0]


def test_nan_metrics_never_pass():
    champion = frame([1.0, 2.0, 3.0])
    assert not evaluate(frame([np.nan, np.nan, np.nan]), champion, metric="holdout_rmse").passed
    nothing = evaluate(frame([np.nan] * 3), frame([np.nan] * 3), metric="holdout_rmse",
                       thresholds=GateThresholds(max_worse_fraction=1.0))
    assert not nothing.passed and "no shared group has a finite holdout_rmse" in nothing.reasons[0]
    # a group that lost its metric counts as worse
    assert evaluate(frame([1.0, 2.0, np.nan]), champion).worse_fraction == pytest.approx(1 / 3)


def test_bad_settings_are_input_errors_naming_them():
    with pytest.raises(InputError, match="metric='holdout_mape': expected a metric column"):
        metric_direction("holdout_mape")
    with pytest.raises(InputError, match="max_median_worse=nan: expected a finite number >= 0"):
        GateThresholds(max_median_worse=float("nan"))
    with pytest.raises(InputError, match=r"max_worse_fraction=1.5: expected a number between 0 and 1"):
        GateThresholds(max_worse_fraction=1.5)
    with pytest.raises(InputError, match="no holdout_r2 column"):
        evaluate(frame([1.0]).drop(columns="holdout_r2"), frame([1.0]), metric="holdout_r2")
    with pytest.raises(InputError, match="keyed by"):
        evaluate(frame([1.0]).drop(columns="item"), frame([1.0]))
    with pytest.raises(InputError, match="more than once"):
        evaluate(frame([1.0, 1.0], stores=[0, 0]), frame([1.0]))
    with pytest.raises(InputError, match="No ok group has a finite holdout_rmse or holdout_accuracy"):
        default_metric(frame([np.nan]))


def test_relative_change_around_zero():
    assert relative_change(0.0, 0.0) == 0.0 and relative_change(0.0, 1.0) == math.inf
    assert relative_change(-2.0, -1.0) == 0.5  # r2 from -2 to -1: better by half


# ---------------------------------------------------------------- properties

values = st.lists(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), min_size=1, max_size=30)
DIRECTED = [("holdout_rmse", "lower"), ("holdout_log_loss", "lower"), ("holdout_r2", "higher"),
            ("holdout_accuracy", "higher"), ("holdout_roc_auc", "higher")]


@settings(max_examples=60, deadline=None)
@given(values, st.sampled_from([m for m, _ in DIRECTED]), st.floats(0.0, 1.0))
def test_a_challenger_equal_to_the_champion_always_passes(vals, metric, max_worse_fraction):
    champion = frame(vals, metric=metric)
    thresholds = GateThresholds(max_median_worse=0.0, max_worse_fraction=max_worse_fraction)
    assert evaluate(champion.copy(), champion, metric=metric, thresholds=thresholds).passed


@settings(max_examples=60, deadline=None)
@given(values, st.lists(st.floats(min_value=0.01, max_value=100.0), min_size=30, max_size=30),
       st.sampled_from(DIRECTED))
def test_a_challenger_worse_on_every_group_always_fails(vals, steps, metric_direction_pair):
    metric, direction = metric_direction_pair
    sign = 1.0 if direction == "lower" else -1.0
    worse = [v + sign * s for v, s in zip(vals, steps)]
    verdict = evaluate(frame(worse, metric=metric), frame(vals, metric=metric), metric=metric)
    assert not verdict.passed and verdict.worse_fraction == 1.0


@settings(max_examples=60, deadline=None)
@given(values, st.lists(st.floats(min_value=0.01, max_value=100.0), min_size=30, max_size=30))
def test_swapping_the_metric_direction_flips_the_verdict(vals, steps):
    lower = [v - s for v, s in zip(vals, steps)]  # better where lower is better, worse where higher is
    as_rmse = evaluate(frame(lower), frame(vals), metric="holdout_rmse")
    as_r2 = evaluate(frame(lower, metric="holdout_r2"), frame(vals, metric="holdout_r2"), metric="holdout_r2")
    assert as_rmse.passed and not as_r2.passed
