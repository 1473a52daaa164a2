"""Driver-side checks of the input and the estimator, run before any training job.

Every error names what is wrong, what was expected, what was found and how to fix it.
Functions here take plain column/type lists so they are testable without Spark.
"""
from __future__ import annotations

import numpy as np

from manymodels.core.estimators import task_of
from manymodels.core.schema import FIXED_NAMES, INTERNAL_PREFIX, SCORING_NAMES
from manymodels.core.spec import FAILURE_POLICIES, TASKS, TrainSpec
from manymodels.errors import SHOW, InputError, short_list
from manymodels.settings import MODEL_BYTES_CEILING

NUMERIC_SPARK_TYPES = ("tinyint", "smallint", "int", "bigint", "float", "double", "boolean")
NESTED_SPARK_TYPES = ("array", "map", "struct", "interval", "variant", "void")  # refused as group keys


def check_columns(spec: TrainSpec, dtypes) -> None:
    """``dtypes``: the input's ``df.dtypes`` (a list of (column, Spark simple type) pairs; a dict is accepted too,
    but only the list shows an input with two columns of one name)."""
    pairs = list(dtypes.items()) if isinstance(dtypes, dict) else [tuple(p) for p in dtypes]
    dtypes = dict(pairs)
    check_unique_names(spec.group_cols, spec.feature_cols)
    if not spec.group_cols:
        raise InputError("group_cols is empty: expected at least one group key column, e.g. group_cols=['store'].")
    if not spec.feature_cols:
        raise InputError("feature_cols is empty: expected at least one numeric feature column.")
    wanted = list(spec.group_cols) + list(spec.feature_cols) + [spec.label_col]
    missing = [c for c in dict.fromkeys(wanted) if c not in dtypes]
    if missing:
        raise InputError(
            f"Missing input column(s) {short_list(missing)}: expected the group, feature and label columns "
            f"to be in the input, found only {short_list(dtypes, 12)}. "
            "Fix the column names or rename the input's columns.")
    overlap = set(spec.feature_cols) & (set(spec.group_cols) | {spec.label_col})
    if overlap:
        raise InputError(f"Column(s) {short_list(sorted(overlap))} are both features and group keys or label: "
                         "expected each column in one role only. Fix: drop them from feature_cols (or from "
                         "group_cols / label_col).")
    bad = [(c, dtypes[c]) for c in spec.feature_cols if not dtypes[c].startswith(NUMERIC_SPARK_TYPES + ("decimal",))]
    if bad:
        raise InputError(
            f"Non-numeric feature column(s): {_types_text(bad)}. Expected numeric types; "
            "cast them (F.col(c).cast('double')) or encode them before training.")
    label_type = dtypes[spec.label_col]
    if not (label_type.startswith(NUMERIC_SPARK_TYPES + ("decimal",)) or label_type == "string"):
        raise InputError(f"Label column '{spec.label_col}' has type {label_type}: expected a numeric or string column.")
    check_input_duplicates([c for c, _ in pairs], wanted)
    check_case_clashes([c for c, _ in pairs], wanted)
    check_reserved_names(spec)
    check_key_types(spec, dtypes)
    check_label_kind(spec, label_type)


def _types_text(pairs: list[tuple[str, str]]) -> str:
    return ", ".join(f"'{c}' is {t}" for c, t in pairs[:SHOW]) + (" ..." if len(pairs) > SHOW else "")


def check_key_types(spec: TrainSpec, dtypes: dict) -> None:
    """Group keys are atomic values: they are compared, hashed into seeds and written as text into paths."""
    nested = [(c, dtypes[c]) for c in spec.group_cols if dtypes[c].startswith(NESTED_SPARK_TYPES)]
    if nested:
        raise InputError(f"Group column(s) of a nested or unsupported type: {_types_text(nested)}. Expected atomic "
                         "types (string, integers, boolean, float, double, decimal, date, timestamp, binary). Fix: "
                         "use an atomic column as the key, e.g. F.col(c).cast('string') or F.to_json(c), or one key "
                         "column per field of a struct.")


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
    if not isinstance(spec.min_rows, (int, np.integer)) or isinstance(spec.min_rows, bool) or spec.min_rows < 2:
        raise InputError(f"min_rows={spec.min_rows!r}: expected an integer of at least 2 (a model fitted on one row "
                         "has nothing to learn from and no metric). Groups with fewer labelled rows than min_rows "
                         "are recorded as 'skipped' (failure_policy='record') or refused before training "
                         "(failure_policy='raise'). Fix: min_rows=2 or more (default 10).")
    if spec.oversize not in ("refuse", "subsample"):
        raise InputError(f"oversize={spec.oversize!r}: expected 'refuse' (error naming the group) or 'subsample'.")
    if not isinstance(spec.max_group_bytes, int) or spec.max_group_bytes <= 0:
        raise InputError(f"max_group_bytes={spec.max_group_bytes!r}: expected a positive number of bytes, "
                         f"e.g. {1 << 30} for 1 GiB.")
    limit = spec.max_model_bytes
    if not isinstance(limit, (int, np.integer)) or isinstance(limit, bool) or limit <= 0:
        raise InputError(f"max_model_bytes={limit!r}: expected a positive integer number of bytes, the largest "
                         f"serialized model a group may keep (default {512 << 20} = 512 MiB), e.g. {256 << 20}.")
    if limit > MODEL_BYTES_CEILING:
        raise InputError(f"max_model_bytes={limit}: above {MODEL_BYTES_CEILING} (2 GiB - 1 MiB), the largest value "
                         "Spark's Arrow transfer can carry from the Python worker (32-bit offsets); a larger model "
                         f"would fail its whole task. Fix: max_model_bytes={MODEL_BYTES_CEILING} or less, and a "
                         "smaller model (fewer trees, a smaller max_depth) if it does not fit.")
    seconds = spec.max_fit_seconds
    if seconds is not None and (not isinstance(seconds, (int, float, np.integer, np.floating))
                                or isinstance(seconds, bool) or not np.isfinite(seconds) or seconds <= 0):
        raise InputError(f"max_fit_seconds={seconds!r}: expected a positive finite number of seconds one group's fit "
                         "may take (its group is then recorded as failed), or None for no limit.")


# ---------------------------------------------------------------- names, label kinds and values

def check_reserved_names(spec: TrainSpec) -> None:
    """Group columns become columns of the model table and of the scores next to manymodels' own
    (``status``, ``prediction``, ...): a key of one of those names (in any case: Spark matches names without
    case) could not be told apart from them. Names starting with ``_mm_`` are manymodels' planning columns."""
    taken = {n.lower() for n in (*FIXED_NAMES, *SCORING_NAMES, "count")}
    clash = [c for c in spec.group_cols if c.lower() in taken]
    if clash:
        raise InputError(
            f"Group column(s) {short_list(clash)} have the name of a column manymodels writes next to the keys "
            f"(the model table and the scores hold {short_list(sorted(taken), 40)}; names match without case): "
            f"expected other names. Fix: rename the column(s) before training, e.g. "
            f"df.withColumnRenamed({clash[0]!r}, {clash[0] + '_key'!r}), and pass the new name in group_cols.")
    internal = [c for c in (*spec.group_cols, *spec.feature_cols, spec.label_col)
                if c.lower().startswith(INTERNAL_PREFIX)]
    if internal:
        raise InputError(f"Column(s) {short_list(internal)} start with {INTERNAL_PREFIX!r}, the prefix of the "
                         "columns manymodels adds while planning: expected other names. Fix: rename them before "
                         f"training, e.g. df.withColumnRenamed({internal[0]!r}, "
                         f"{internal[0][len(INTERNAL_PREFIX):] or 'x'!r}).")


def check_case_clashes(columns: list[str], wanted, case_sensitive: bool = False) -> None:
    """Spark matches column names without case by default: an input holding ``Price`` and ``price`` cannot say
    which one a role means, and two roles named ``x`` and ``X`` would read one column twice."""
    if case_sensitive:
        return
    by_lower: dict[str, list[str]] = {}
    for c in dict.fromkeys(columns):
        by_lower.setdefault(c.lower(), []).append(c)
    for w in dict.fromkeys(wanted):
        for lower, names in by_lower.items():
            if w.lower() == lower and len(names) > 1:
                raise InputError(
                    f"The input has columns {short_list(names)}, which differ only in case: Spark matches names "
                    f"without case (spark.sql.caseSensitive=false), so it cannot tell which one {w!r} means. "
                    "Fix: rename or drop one of them before training.")
    roles = [c.lower() for c in dict.fromkeys(wanted)]
    twins = sorted({c for c in dict.fromkeys(wanted) if roles.count(c.lower()) > 1})
    if twins:
        raise InputError(f"Column names {short_list(twins)} differ only in case but are given different roles: "
                         "Spark matches names without case, so they name one column. Fix: rename one of them.")


def check_unique_names(group_cols, feature_cols) -> None:
    """Each group and feature column named once (a repeated feature would be fitted twice, or refused by Arrow)."""
    for role, cols in (("group_cols", group_cols), ("feature_cols", feature_cols)):
        repeated = [c for c in dict.fromkeys(cols) if list(cols).count(c) > 1]
        if repeated:
            raise InputError(f"{role} lists {short_list(repeated)} more than once: expected each column once. "
                             f"Fix: {role}={list(dict.fromkeys(cols))!r}.")


def check_input_duplicates(columns: list[str], wanted) -> None:
    """The input must not hold two columns of one name among those training reads (e.g. after a join)."""
    repeated = [(c, columns.count(c)) for c in dict.fromkeys(wanted) if columns.count(c) > 1]
    if repeated:
        shown = ", ".join(f"{c!r} ({n} columns)" for c, n in repeated[:SHOW])
        raise InputError(f"The input has several columns of one name: {shown}. Spark cannot tell which one is "
                         "meant; expected each group, feature and label column once. Fix: drop or rename the "
                         "repeats before training (e.g. after a join: select the columns you need, or "
                         "withColumnRenamed on one side).")


def check_label_kind(spec: TrainSpec, label_type: str) -> None:
    """A string label needs a classifier (checked from the schema; a continuous numeric label for a classifier
    needs the data: ``check_values``)."""
    if label_type == "string" and task_of(spec) == "regression":
        name = type(spec.estimator).__name__
        raise InputError(f"Label column '{spec.label_col}' is string but {name} is a regressor: expected a numeric "
                         "label for regression. Fix: cast the label (F.col(label).cast('double')) if it holds "
                         "numbers, or use a classifier (e.g. LogisticRegression) for class labels.")


FLOAT_TYPES = ("double", "float")


def parse_int(name: str, value, *, minimum: int | None = None) -> int:
    """A notebook widget / job parameter (a string) as an integer, or an ``InputError`` naming the parameter."""
    text = str(value).strip().replace("_", "").replace(",", "")
    try:
        number = int(text)
    except ValueError:
        raise InputError(f"{name}={value!r}: expected an integer, e.g. {name}=1000. Fix the job parameter or "
                         f"widget '{name}' (locally: the environment variable MM_{name.upper()}).") from None
    if minimum is not None and number < minimum:
        raise InputError(f"{name}={number}: expected at least {minimum}. Fix the job parameter or widget '{name}' "
                         f"(locally: MM_{name.upper()}).")
    return number


TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def parse_bool(name: str, value) -> bool:
    """A notebook widget / job parameter (a string) as a boolean, or an ``InputError`` naming the parameter."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS or text in FALSE_WORDS:
        return text in TRUE_WORDS
    raise InputError(f"{name}={value!r}: expected true or false. Fix the job parameter or widget '{name}' "
                     f"(locally: the environment variable MM_{name.upper()}).")


def check_path(source: str, what: str = "input_path") -> None:
    """A local or FUSE path (``/Volumes/...``, ``/dbfs/...``) must exist before Spark reads it; table names and
    URIs with a scheme (``s3://``, ``dbfs:/``) are left to Spark."""
    from pathlib import Path

    if "/" not in source or "://" in source or source.split("/", 1)[0].endswith(":"):
        return
    if not Path(source).exists():
        parent = Path(source).parent
        found = short_list(sorted(p.name for p in parent.iterdir())[:12], 12) if parent.is_dir() else "nothing"
        raise InputError(f"{what}={source!r} not found: expected a table name, a Parquet folder or a CSV file; "
                         f"{parent} holds {found}. Fix the path, or run the step that writes it first.")


def check_fraction(name: str, value) -> float:
    """A gate's fraction as a float in [0, 1]; NaN (every comparison with it is false, so a gate would pass or
    fail whatever the run did), infinities and text that is not a number are an ``InputError`` naming ``name``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not 0.0 <= number <= 1.0:
        raise InputError(f"{name}={value!r}: expected a number between 0 and 1, e.g. {name}=0.95 (NaN, "
                         "infinities and text are refused: a gate compared with them decides nothing).")
    return number


def check_seconds(name: str, value) -> float:
    """A positive, finite number of seconds (NaN would make a wait endless); else an ``InputError`` naming ``name``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not 0.0 < number < float("inf"):
        raise InputError(f"{name}={value!r}: expected a positive, finite number of seconds, e.g. {name}=3600.")
    return number
