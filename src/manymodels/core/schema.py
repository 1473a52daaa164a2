"""Column names and the model-table schema, declared once and used on both sides of the UDF.

The model table has the group key columns first (with the input's types), then the fixed
columns below. ``model_table_ddl`` builds the Spark schema; ``empty_model_table`` the pandas
frame with the same columns, returned for empty input.
"""
from __future__ import annotations

import pandas as pd

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_SKIPPED = "skipped"

REGRESSION_METRICS = ("r2", "rmse")
CLASSIFICATION_METRICS = ("accuracy", "log_loss", "roc_auc")
METRIC_NAMES = REGRESSION_METRICS + CLASSIFICATION_METRICS
METRIC_COLUMNS = tuple(f"{split}_{m}" for split in ("train", "holdout") for m in METRIC_NAMES)

# (column, Spark DDL type, pandas dtype) after the key columns, in order.
FIXED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("status", "string", "object"),
    ("error", "string", "object"),
    ("n_rows", "bigint", "int64"),
    ("n_rows_input", "bigint", "int64"),  # rows of the group in the input; more than n_rows when subsampled
    ("n_train", "bigint", "int64"),
    ("n_holdout", "bigint", "int64"),
    ("fit_seconds", "double", "float64"),
    *((name, "double", "float64") for name in METRIC_COLUMNS),
    ("params", "string", "object"),
    ("seed", "bigint", "int64"),
    ("model", "binary", "object"),
    ("model_sha256", "string", "object"),
    ("model_format", "string", "object"),
    ("library_versions", "string", "object"),
    ("task_attempt", "string", "object"),
    ("training_run_id", "string", "object"),
    ("data_fingerprint", "string", "object"),  # the group's rows as a multiset (retrain.py); null for per-file training
    ("spec_fingerprint", "string", "object"),  # estimator, params and settings that decide the model (retrain.py)
    ("carried_from", "string", "object"),  # the training run that fitted a model carried over unchanged; else null
)
FIXED_NAMES = tuple(c for c, _, _ in FIXED_COLUMNS)
# Columns that scoring adds after the key and pass-through columns (spark/scoring.py, core/routing.py).
SCORING_NAMES = ("prediction", "probabilities", "status", "error", "model_version")
# Prefix of the columns manymodels adds to the user's rows while planning (``_mm_bin``, ``_mm_fraction``, ...).
INTERNAL_PREFIX = "_mm_"


def quoted(name: str) -> str:
    """``name`` as one Spark identifier: back-quoted, inner back-quotes doubled, so that dots, spaces and
    back-quotes in a column name are never read as a struct field or a second name."""
    return "`" + str(name).replace("`", "``") + "`"


def model_table_ddl(key_ddl: list[tuple[str, str]]) -> str:
    """Spark DDL of the model table for the given ``(key column, Spark DDL type)`` pairs."""
    cols = [f"{quoted(name)} {typ}" for name, typ in key_ddl]
    cols += [f"{quoted(name)} {typ}" for name, typ, _ in FIXED_COLUMNS]
    return ", ".join(cols)


def empty_model_table(key_cols: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series([], dtype="object") for c in key_cols})
    for name, _, dtype in FIXED_COLUMNS:
        frame[name] = pd.Series([], dtype=dtype)
    return frame
