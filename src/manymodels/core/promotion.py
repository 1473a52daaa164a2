"""The champion/challenger promotion gate, pure pandas: is a newly trained version good enough to serve?

Inputs are two per-group metrics frames, the ``group_metrics.parquet`` each training run logs: the group key
columns first, then ``status`` and the ``train_*``/``holdout_*`` metric columns (``schema.METRIC_COLUMNS``). The
gate checks that enough of the challenger's groups trained (``min_ok_fraction``, the check the register step
always made) and, when there is a champion, compares one metric on the groups that are ok in both runs: the
median may not degrade by more than ``max_median_worse`` (relative), at most ``max_worse_fraction`` of the shared
groups may be worse, and the shared groups must be at least ``min_shared_fraction`` of the challenger's ok groups
(a comparison on a small overlap says little). A missing or NaN figure never passes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from manymodels.core.checks import check_fraction
from manymodels.core.schema import METRIC_COLUMNS, STATUS_FAILED, STATUS_OK
from manymodels.errors import InputError, short_list

LOWER, HIGHER = "lower", "higher"
# Which way is better, per metric name (the part after train_/holdout_).
DIRECTIONS = {"rmse": LOWER, "log_loss": LOWER, "r2": HIGHER, "accuracy": HIGHER, "roc_auc": HIGHER}
DEFAULT_METRICS = ("holdout_rmse", "holdout_accuracy")  # regression, then classification


@dataclass(frozen=True)
class GateThresholds:
    """What a challenger must meet; fractions in [0, 1], ``max_median_worse`` a finite number >= 0
    (0.0: the median may not be worse at all; 0.05: up to 5 % worse)."""

    min_ok_fraction: float = 0.95
    max_median_worse: float = 0.05
    max_worse_fraction: float = 0.6
    min_shared_fraction: float = 0.5

    def __post_init__(self):
        for name in ("min_ok_fraction", "max_worse_fraction", "min_shared_fraction"):
            object.__setattr__(self, name, check_fraction(name, getattr(self, name)))
        object.__setattr__(self, "max_median_worse", check_tolerance("max_median_worse", self.max_median_worse))


def check_tolerance(name: str, value) -> float:
    """A relative tolerance: a finite number >= 0; anything else is an ``InputError`` naming ``name``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not (math.isfinite(number) and number >= 0.0):
        raise InputError(f"{name}={value!r}: expected a finite number >= 0 (a relative degradation, e.g. "
                         f"{name}=0.05 for 5 %); NaN, infinities and text are refused.")
    return number


def metric_direction(metric: str) -> str:
    """``"lower"`` or ``"higher"``: which way ``metric`` (a metric column such as ``holdout_rmse``) is better."""
    name = metric.split("_", 1)[1] if metric.startswith(("train_", "holdout_")) else metric
    if metric not in METRIC_COLUMNS or name not in DIRECTIONS:
        raise InputError(f"metric={metric!r}: expected a metric column, one of {', '.join(METRIC_COLUMNS)} "
                         f"(lower is better for rmse and log_loss, higher for r2, accuracy and roc_auc). "
                         "Fix: e.g. metric=holdout_rmse.")
    return DIRECTIONS[name]


def default_metric(*runs: pd.DataFrame) -> str:
    """``holdout_rmse`` when the runs' ok groups have it (regression), else ``holdout_accuracy`` (classification);
    the first run that has ok groups decides."""
    for metrics in runs:
        ok = metrics[metrics["status"] == STATUS_OK]
        for column in DEFAULT_METRICS if len(ok) else ():
            if column in ok and ok[column].notna().any():
                return column
    raise InputError(f"No ok group has a finite {' or '.join(DEFAULT_METRICS)}: the gate has nothing to compare. "
                     f"Fix: pass metric= one of {', '.join(METRIC_COLUMNS)} that the runs recorded.")


@dataclass(frozen=True)
class GateVerdict:
    """The gate's decision and the figures it rests on; ``reasons`` lists every check that failed."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    metric: str = ""
    direction: str = ""
    ok_fraction: float = float("nan")
    compared: bool = False  # False: no champion, only the ok fraction was checked
    shared_groups: int = 0
    challenger_ok_groups: int = 0
    shared_fraction: float = float("nan")
    median_champion: float = float("nan")
    median_challenger: float = float("nan")
    relative_change: float = float("nan")  # (median challenger - median champion) / |median champion|
    worse_fraction: float = float("nan")

    def summary(self) -> str:
        """A few lines a person reads in the registry or a job log."""
        head = "PASSED" if self.passed else "FAILED"
        lines = [f"quality gate {head}: ok fraction {self.ok_fraction:.3f}"]
        if self.compared:
            better = "lower" if self.direction == LOWER else "higher"
            lines.append(f"{self.metric} ({better} is better) on {self.shared_groups} shared groups "
                         f"({self.shared_fraction:.3f} of the challenger's {self.challenger_ok_groups} ok groups): "
                         f"median {self.median_champion:.6g} (champion) -> {self.median_challenger:.6g} "
                         f"(challenger), relative change {self.relative_change:+.4f}; worse on "
                         f"{self.worse_fraction:.3f} of the shared groups")
        else:
            lines.append("no champion to compare with: only the ok fraction was checked")
        lines += [f"- {reason}" for reason in self.reasons]
        return "\n".join(lines)


def ok_fraction(metrics: pd.DataFrame) -> float:
    """ok / (ok + failed) groups; skipped groups (too small to train) do not count; 0.0 when there are none."""
    status = metrics["status"]
    ok, failed = int((status == STATUS_OK).sum()), int((status == STATUS_FAILED).sum())
    return ok / (ok + failed) if ok + failed else 0.0


def key_columns(metrics: pd.DataFrame) -> list[str]:
    """The group key columns: those before ``status`` (the order every training run writes)."""
    if "status" not in metrics.columns:
        raise InputError(f"A group metrics frame without a status column (columns: {short_list(metrics.columns)}): "
                         "expected the group_metrics.parquet of a per-group training run (manymodels train).")
    return list(metrics.columns[: list(metrics.columns).index("status")])


def _ok_metric(metrics: pd.DataFrame, keys: list[str], metric: str, role: str) -> pd.DataFrame:
    """The ok groups' keys and ``metric``, one row per group (a duplicated key is an ``InputError``)."""
    if metric not in metrics.columns:
        raise InputError(f"The {role}'s group metrics have no {metric} column (columns: "
                         f"{short_list(metrics.columns)}). Fix: pass a metric both runs recorded.")
    ok = metrics.loc[metrics["status"] == STATUS_OK, [*keys, metric]]
    duplicated = ok[ok.duplicated(keys, keep=False)]
    if len(duplicated):
        found = short_list(duplicated[keys].drop_duplicates().itertuples(index=False, name=None))
        raise InputError(f"The {role}'s group metrics list these groups more than once: {found}; expected one row "
                         "per group, as group_metrics.parquet of a training run has.")
    return ok


def relative_change(champion: float, challenger: float) -> float:
    """(challenger - champion) / |champion|; +/-inf when the champion's value is 0 and the challenger's is not."""
    if challenger == champion:
        return 0.0
    if champion == 0:
        return math.copysign(math.inf, challenger - champion)
    return (challenger - champion) / abs(champion)


def _compare(champion: pd.DataFrame, challenger: pd.DataFrame, metric: str, direction: str) -> dict:
    """Shared-group figures: per group, worse when the challenger's value is NaN while the champion's is not, or
    strictly worse; medians over the groups finite in both (groups NaN in both say nothing either way)."""
    keys = [c for c in challenger.columns if c != metric]
    both = challenger.merge(champion, on=keys, suffixes=("_challenger", "_champion"))
    new = both[f"{metric}_challenger"].to_numpy(dtype="float64")
    old = both[f"{metric}_champion"].to_numpy(dtype="float64")
    finite = np.isfinite(new) & np.isfinite(old)
    worse_value = new > old if direction == LOWER else new < old
    worse = (finite & worse_value) | (~np.isfinite(new) & np.isfinite(old))
    out = {"shared_groups": len(both), "worse_fraction": float(worse.mean()) if len(both) else float("nan")}
    if finite.any():
        out["median_champion"] = float(np.median(old[finite]))
        out["median_challenger"] = float(np.median(new[finite]))
        out["relative_change"] = relative_change(out["median_champion"], out["median_challenger"])
    return out


def _reasons(v: dict, t: GateThresholds, compared: bool) -> list[str]:
    """Every failed check, each naming the figure, the threshold and the option that sets it."""
    reasons = []
    if not v["ok_fraction"] >= t.min_ok_fraction:
        reasons.append(f"ok fraction {v['ok_fraction']:.3f} < min_ok_fraction {t.min_ok_fraction}: too many "
                       "groups failed; see the run's group_metrics table for their errors")
    if compared:
        reasons += _comparison_reasons(v, t)
    return reasons


def _comparison_reasons(v: dict, t: GateThresholds) -> list[str]:
    """The champion comparison's failed checks; too few shared groups (or none) makes the rest meaningless."""
    if not v["shared_fraction"] >= t.min_shared_fraction:
        return [f"{v['shared_groups']} shared ok groups are {v['shared_fraction']:.3f} of the challenger's "
                f"{v['challenger_ok_groups']} ok groups < min_shared_fraction {t.min_shared_fraction}: the runs "
                "cover different groups (another panel or other group columns?)"]
    if math.isnan(v["relative_change"]):
        return [f"no shared group has a finite {v['metric']} in both runs: nothing to compare"]
    reasons = []
    degradation = v["relative_change"] if v["direction"] == LOWER else -v["relative_change"]
    if not degradation <= t.max_median_worse:
        reasons.append(f"median {v['metric']} {v['median_champion']:.6g} (champion) -> {v['median_challenger']:.6g} "
                       f"(challenger) is {degradation:.4f} worse (relative) > max_median_worse {t.max_median_worse}")
    if not v["worse_fraction"] <= t.max_worse_fraction:
        reasons.append(f"worse on {v['worse_fraction']:.3f} of the shared groups > max_worse_fraction "
                       f"{t.max_worse_fraction}")
    return reasons


def evaluate(challenger: pd.DataFrame, champion: pd.DataFrame | None, *, metric: str | None = None,
             thresholds: GateThresholds = GateThresholds()) -> GateVerdict:
    """The gate's verdict on ``challenger`` against ``champion`` (None: no champion yet, a first promotion, where
    only the ok fraction counts). ``metric``: a metric column (default: ``default_metric`` of the challenger)."""
    direction = metric_direction(metric) if metric else ""
    figures = {"ok_fraction": ok_fraction(challenger)}
    if champion is None:
        reasons = _reasons(figures, thresholds, False)
        return GateVerdict(not reasons, reasons, metric=metric or "", direction=direction, **figures)
    if not metric:
        metric = default_metric(challenger, champion)
        direction = metric_direction(metric)
    keys = key_columns(challenger)
    if key_columns(champion) != keys:
        raise InputError(f"The challenger's groups are keyed by {keys}, the champion's by {key_columns(champion)}: "
                         "the gate compares group by group. Fix: train the challenger with the champion's "
                         "group_cols, or promote it as a first version (move or delete the champion alias).")
    new = _ok_metric(challenger, keys, metric, "challenger")
    old = _ok_metric(champion, keys, metric, "champion")
    figures.update(metric=metric, direction=direction, challenger_ok_groups=len(new),
                   **_compare(old, new, metric, direction))
    figures["shared_fraction"] = figures["shared_groups"] / len(new) if len(new) else 0.0
    figures.setdefault("relative_change", float("nan"))
    reasons = _reasons(figures, thresholds, True)
    return GateVerdict(not reasons, reasons, compared=True, **figures)
