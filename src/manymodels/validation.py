"""Driver-side checks of the input and the estimator, run before any training job.

Every error names what is wrong, what was expected, what was found and how to fix it.
Functions here take plain column/type lists so they are testable without Spark.
"""
from __future__ import annotations

from typing import Iterable

from manymodels.config import FAILURE_POLICIES, TASKS, TrainSpec

NUMERIC_SPARK_TYPES = ("tinyint", "smallint", "int", "bigint", "float", "double", "boolean")
SHOW = 5


class InputError(ValueError):
    """The training input or configuration is not usable; the message says how to fix it."""


def short_list(items: Iterable[object], show: int = SHOW) -> str:
    items = list(items)
    text = ", ".join(repr(i) for i in items[:show])
    return text + (f" and {len(items) - show} more" if len(items) > show else "")


def check_columns(spec: TrainSpec, dtypes: dict[str, str]) -> None:
    """``dtypes`` maps each input column to its Spark simple type name (``df.dtypes``)."""
    if not spec.group_cols:
        raise InputError("group_cols is empty: expected at least one group key column, e.g. group_cols=['store'].")
    if not spec.feature_cols:
        raise InputError("feature_cols is empty: expected at least one numeric feature column.")
    wanted = list(spec.group_cols) + list(spec.feature_cols) + [spec.label_col]
    missing = [c for c in dict.fromkeys(wanted) if c not in dtypes]
    if missing:
        raise InputError(
            f"Missing input column(s) {short_list(missing)}: expected the group, feature and label columns "
            f"to be in the input, found only {short_list(dtypes, 12)}. Fix the column names or rename the input's columns.")
    overlap = set(spec.feature_cols) & (set(spec.group_cols) | {spec.label_col})
    if overlap:
        raise InputError(f"Column(s) {short_list(sorted(overlap))} are both features and group keys or label; "
                         "a column can have one role only.")
    bad = [(c, dtypes[c]) for c in spec.feature_cols if not dtypes[c].startswith(NUMERIC_SPARK_TYPES + ("decimal",))]
    if bad:
        shown = ", ".join(f"'{c}' is {t}" for c, t in bad[:SHOW])
        raise InputError(
            f"Non-numeric feature column(s): {shown}{' ...' if len(bad) > SHOW else ''}. Expected numeric types; "
            "cast them (F.col(c).cast('double')) or encode them before training.")
    label_type = dtypes[spec.label_col]
    if not (label_type.startswith(NUMERIC_SPARK_TYPES + ("decimal",)) or label_type == "string"):
        raise InputError(f"Label column '{spec.label_col}' has type {label_type}: expected a numeric or string column.")


def check_estimator(estimator: object, params: dict | None = None) -> object:
    """Check ``estimator`` is an unfitted scikit-learn estimator; apply ``params`` after checking their names."""
    from sklearn.base import clone

    if isinstance(estimator, type):
        raise InputError(f"estimator is the class {estimator.__name__}, expected an instance: "
                         f"pass {estimator.__name__}() instead.")
    if not (hasattr(estimator, "fit") and hasattr(estimator, "get_params")):
        raise InputError(f"estimator must be a scikit-learn estimator (an object with fit and get_params), "
                         f"found {type(estimator).__name__}: {estimator!r:.80}. Pass e.g. LinearRegression().")
    try:
        estimator = clone(estimator)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"estimator {type(estimator).__name__} cannot be cloned by sklearn.base.clone ({exc}); "
                         "it must follow the scikit-learn estimator contract.") from exc
    if params:
        valid = estimator.get_params(deep=True)
        unknown = [p for p in params if p not in valid]
        if unknown:
            raise InputError(
                f"Unknown parameter(s) {short_list(unknown)} for estimator {type(estimator).__name__}: expected one "
                f"of {short_list(sorted(valid), 20)}. Fix the name (nested parameters use step__param).")
        estimator.set_params(**params)
    return estimator


def check_settings(spec: TrainSpec) -> None:
    if spec.failure_policy not in FAILURE_POLICIES:
        raise InputError(f"failure_policy={spec.failure_policy!r}: expected one of {FAILURE_POLICIES}.")
    if spec.task is not None and spec.task not in TASKS:
        raise InputError(f"task={spec.task!r}: expected one of {TASKS} or None to infer it from the estimator.")
    if not 0 <= spec.holdout_fraction < 1:
        raise InputError(f"holdout_fraction={spec.holdout_fraction}: expected a number in [0, 1).")
    if spec.min_rows < 1:
        raise InputError(f"min_rows={spec.min_rows}: expected at least 1.")
    if spec.oversize not in ("refuse", "subsample"):
        raise InputError(f"oversize={spec.oversize!r}: expected 'refuse' (error naming the group) or 'subsample'.")
    if not isinstance(spec.max_group_bytes, int) or spec.max_group_bytes <= 0:
        raise InputError(f"max_group_bytes={spec.max_group_bytes!r}: expected a positive number of bytes, "
                         f"e.g. {1 << 30} for 1 GiB.")


def check_group_sizes(key_cols: tuple[str, ...], sizes) -> None:
    """``sizes`` is a pandas frame of the key columns and ``count``: one row per group."""
    if len(sizes) == 0:
        raise InputError("The input has no rows: expected at least one group to train. "
                         "Check the input path or the filter that produced it.")
    null_rows = sizes[sizes[list(key_cols)].isna().any(axis=1)]
    if len(null_rows):
        n = int(null_rows["count"].sum())
        cols = [c for c in key_cols if sizes[c].isna().any()]
        raise InputError(
            f"{n} input row(s) have a null group key in column(s) {short_list(cols)}: every row needs a key. "
            "Drop them (df.dropna(subset=group_cols)) or fill the key before training.")
