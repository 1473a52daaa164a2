"""Driver checks that need one Spark aggregate: group sizes, null keys, and non-finite or fractional values,
named by group and column with an example row. Each check is one aggregate over the input, run before the
training job; the rules it applies are the pure ones of ``core.checks``."""
from __future__ import annotations

from manymodels.core.checks import FLOAT_TYPES
from manymodels.core.estimators import task_of
from manymodels.core.keys import key_text
from manymodels.core.schema import quoted
from manymodels.core.spec import TrainSpec
from manymodels.errors import SHOW, InputError, short_list
from manymodels.spark.session import col


def check_group_sizes(key_cols: tuple[str, ...], sizes, *, spec: TrainSpec | None = None, df=None) -> None:
    """``sizes`` is a pandas frame of the key columns and ``count``: one row per group.

    With ``spec`` (and the columns of ``value_aggregates`` in ``sizes``, which are then dropped from it), also
    ``check_values``: infinite values, a continuous label for a classifier, and (``failure_policy='raise'``)
    groups with fewer labelled rows than ``min_rows``."""
    if len(sizes) == 0:
        raise InputError("The input has no rows: expected at least one group to train. "
                         "Check the input path or the filter that produced it.")
    if NULL_KEY_COL in sizes:  # from ``null_key_aggregate``: null, not NaN (a float key may be NaN: one group)
        null_mask = sizes[NULL_KEY_COL].to_numpy() > 0
    else:
        null_mask = sizes[list(key_cols)].isna().any(axis=1).to_numpy()
    null_rows = sizes[null_mask]
    if len(null_rows):
        n = int(null_rows["count"].sum())
        cols = [c for c in key_cols if null_rows[c].isna().any()]
        raise InputError(
            f"{n} input row(s) have a null group key in column(s) {short_list(cols)}: every row needs a key. "
            "Drop them (df.dropna(subset=group_cols)) or fill the key before training.")
    if spec is not None:
        check_values(spec, sizes, df)


NULL_KEY_COL = "_mm_null_key"


def null_key_aggregate(df, key_cols) -> list:
    """``[1 for a group whose key has a null, else 0]`` when a key column is float or double: pandas shows both
    null and NaN as NaN, and Spark groups NaN keys as one ordinary group, so only null is refused."""
    from functools import reduce

    from pyspark.sql import functions as F

    dtypes = dict(df.dtypes)
    if not any(dtypes.get(c) in FLOAT_TYPES for c in key_cols):
        return []
    any_null = reduce(lambda a, b: a | b, [col(c).isNull() for c in key_cols])  # one term per key column
    return [F.max(F.when(any_null, 1).otherwise(0)).alias(NULL_KEY_COL)]


NONFINITE_COL, FRACTIONAL_COL, LABELLED_COL = "_mm_nonfinite", "_mm_fractional", "_mm_labelled"


VALUE_COLS = (NONFINITE_COL, FRACTIONAL_COL, LABELLED_COL)


def _float_cols(spec: TrainSpec, dtypes: dict) -> list[str]:
    return [c for c in dict.fromkeys([*spec.feature_cols, spec.label_col]) if dtypes.get(c) in FLOAT_TYPES]


def _is_inf(c: str):
    return col(c).isin(float("inf"), float("-inf"))


def _fractional(c: str):
    from pyspark.sql import functions as F

    return ~F.isnan(col(c)) & ~_is_inf(c) & (col(c) % 1 != 0)


# SQL over ``x``, an array element: NaN, the missing value, is not infinite.
INF_TEST_SQL = "x IN (double('inf'), double('-inf'))"


def _as_doubles_sql(cols, dtypes: dict) -> str:
    """SQL of one flat array of the float/double columns ``cols`` (float cast: one element type). One SQL text,
    not a Column per column: 2,000 columns make one expression with 2,000 children (a 2,000-deep tree of ORs
    overflows the JVM stack on classic Spark and the protobuf nesting limit of Spark Connect), and building
    it is one call instead of thousands of Py4J round trips (about 2 ms each)."""
    return "array(" + ", ".join(quoted(c) if dtypes[c] == "double" else f"CAST({quoted(c)} AS DOUBLE)"
                                for c in cols) + ")"


def value_aggregates(spec: TrainSpec, df) -> list:
    """Aggregate columns for the per-group statistics job that precedes training (no extra pass over the data):
    rows with an infinite feature or label, non-integral labels when the estimator is a classifier, and rows
    with a label. ``check_group_sizes(..., spec=spec, df=df)`` reads them."""
    from pyspark.sql import functions as F

    dtypes = dict(df.dtypes)
    out = [F.count(col(spec.label_col)).alias(LABELLED_COL), *nonfinite_aggregate(df, _float_cols(spec, dtypes))]
    if task_of(spec) == "classification" and dtypes.get(spec.label_col) in FLOAT_TYPES:
        out.append(F.sum(F.when(_fractional(spec.label_col), 1).otherwise(0)).alias(FRACTIONAL_COL))
    return out


def _groups_text(key_cols, frame, count_col: str, what: str) -> str:
    shown = [f"{key_text(tuple(key_cols), tuple(r[c] for c in key_cols))} ({int(r[count_col])} {what})"
             for _, r in frame.head(SHOW).iterrows()]
    return "; ".join(shown) + (f" and {len(frame) - SHOW} more group(s)" if len(frame) > SHOW else "")


def check_values(spec: TrainSpec, sizes, df=None) -> None:
    """The data checks of ``value_aggregates`` (their columns are dropped from ``sizes`` afterwards)."""
    keys = list(spec.group_cols)
    present = [c for c in VALUE_COLS if c in sizes]
    try:
        if NONFINITE_COL in sizes and sizes[NONFINITE_COL].sum() > 0:
            bad = sizes[sizes[NONFINITE_COL] > 0]
            raise_nonfinite(df, [*spec.feature_cols, spec.label_col],
                            f", in group(s) {_groups_text(keys, bad, NONFINITE_COL, 'row(s)')}")
        if FRACTIONAL_COL in sizes and sizes[FRACTIONAL_COL].sum() > 0:
            bad = sizes[sizes[FRACTIONAL_COL] > 0]
            example = _example(df, spec.label_col) if df is not None else None
            name = type(spec.estimator).__name__
            raise InputError(
                f"Label column '{spec.label_col}' holds continuous values{f' (e.g. {example})' if example else ''} "
                f"but {name} is a classifier: expected class labels (integers or strings). Found non-integral "
                f"labels in {int(sizes[FRACTIONAL_COL].sum())} row(s), in group(s) "
                f"{_groups_text(keys, bad, FRACTIONAL_COL, 'row(s)')}. Fix: use a regressor (e.g. LinearRegression) "
                "for a continuous target, or turn the label into classes first (e.g. F.round or bins).")
        if LABELLED_COL in sizes and spec.failure_policy == "raise":
            small = sizes[sizes[LABELLED_COL] < spec.min_rows]
            if len(small):
                raise InputError(
                    f"Group(s) {_groups_text(keys, small, LABELLED_COL, 'row(s) with a label')} have fewer than "
                    f"min_rows={spec.min_rows} rows with a label: with failure_policy='raise' every group must be "
                    "trainable. Fix: drop those groups (keep groups with at least min_rows labelled rows), lower "
                    "min_rows, or use failure_policy='record' to train the others and record these as 'skipped'.")
    finally:
        if present:
            sizes.drop(columns=present, inplace=True)


def _count_columns(df, cols, test_sql: str = INF_TEST_SQL) -> dict:
    """Rows where ``test_sql`` (SQL over ``x``) holds, per float/double column of ``cols``: error path only.
    One aggregate whatever the width: each row yields the positions of its matching columns, which are
    exploded and counted (at most one output row per column), not one aggregate per column."""
    from pyspark.sql import functions as F

    if not cols:
        return {}
    hits = (f"filter(transform({_as_doubles_sql(cols, dict(df.dtypes))}, (x, i) -> CASE WHEN {test_sql} THEN i "
            "END), i -> i IS NOT NULL)")
    rows = df.select(F.explode(F.expr(hits)).alias("i")).groupBy("i").count().collect()
    found = {int(r["i"]): int(r["count"]) for r in rows}
    return {c: found.get(i, 0) for i, c in enumerate(cols)}


def _example(df, label: str):
    row = df.where(_fractional(label)).select(col(label)).limit(1).collect()
    return row[0][0] if row else None


def nonfinite_aggregate(df, cols) -> list:
    """``[number of rows with an infinite value in any float column of cols]`` (empty: no float column).
    Only float/double columns can hold infinity; one ``exists`` over one flat array, whatever the width."""
    from pyspark.sql import functions as F

    dtypes = dict(df.dtypes)
    floats = [c for c in dict.fromkeys(cols) if dtypes.get(c) in FLOAT_TYPES]
    if not floats:
        return []
    return [F.expr(f"count_if(exists({_as_doubles_sql(floats, dtypes)}, x -> {INF_TEST_SQL}))").alias(NONFINITE_COL)]


def raise_nonfinite(df, cols, where: str = "") -> None:
    """The error for infinite values: the columns holding them are counted by one more small job (error path)."""
    dtypes = dict(df.dtypes) if df is not None else {}
    counts = _count_columns(df, [c for c in dict.fromkeys(cols) if dtypes.get(c) in FLOAT_TYPES]) \
        if df is not None else {}
    named = ", ".join(f"'{c}' ({n} row(s))" for c, n in counts.items() if n) or "a feature or the label"
    raise InputError(
        f"Infinite values in column(s) {named}{where}: expected finite numbers (scikit-learn refuses infinity; "
        "null/NaN is the missing value). Fix: replace them with null or a finite value, or drop those rows, e.g. "
        "df.withColumn(c, F.when(F.col(c).isin(float('inf'), float('-inf')), None).otherwise(F.col(c))).")
