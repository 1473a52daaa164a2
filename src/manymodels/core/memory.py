"""Memory guard (pure): estimate each group's in-memory size on a worker before the training job.

A group is fitted from one contiguous slice of an Arrow batch: the Arrow buffers, the pandas
frame made from them, then float64 copies of the features and label (the matrix, its
canonical-order copy and the training split). ``estimate_bytes`` adds those up from the row count
and the column types. A group above ``TrainSpec.max_group_bytes`` is refused with an error naming
it (``oversize="refuse"``, the default) or trained on a seeded sample that fits
(``oversize="subsample"``; the model table's ``n_rows_input`` keeps the original row count).
"""
from __future__ import annotations

import pandas as pd

from manymodels.core.keys import key_text
from manymodels.errors import InputError
from manymodels.settings import ARROW_BYTES_UNCHECKED, ARROW_MAX_BYTES, ARROW_MAX_RECORDS

OVERSIZE_POLICIES = ("refuse", "subsample")
FRACTION_COL = "_mm_fraction"

# Bytes per value in Arrow / pandas for Spark's simple type names; strings are an estimate.
TYPE_BYTES = {"double": 8, "bigint": 8, "long": 8, "timestamp": 8, "timestamp_ntz": 8, "int": 4, "integer": 4,
              "float": 4, "date": 4, "smallint": 2, "tinyint": 1, "boolean": 1, "string": 56, "binary": 64}
DEFAULT_TYPE_BYTES = 16
FLOAT_COPIES = 3  # the float64 matrix, its canonical-order copy, the training split


def row_bytes(dtypes: dict[str, str], key_cols, feature_cols, label_col) -> int:
    """Estimated bytes one row takes on a worker while its group is fitted."""
    cols = list(key_cols) + list(feature_cols) + [label_col]
    arrow = sum(TYPE_BYTES.get(dtypes.get(c, ""), DEFAULT_TYPE_BYTES) for c in cols)
    floats = 8 * (len(feature_cols) + 1) * FLOAT_COPIES
    return 2 * arrow + floats  # Arrow buffers + the pandas frame made from them, then the float copies


def arrow_batch_conf(max_rows: int, dtypes: dict[str, str], cols) -> dict[str, str]:
    """Arrow batch settings for one job: up to ``max_rows`` rows and about 64 MB of ``cols`` (Spark simple type
    names in ``dtypes``, sized by ``TYPE_BYTES``), bounded by rows alone so that Spark skips its per-row byte
    accounting (see ``settings.ARROW_MAX_BYTES``); never fewer than 1,000 rows."""
    row = sum(TYPE_BYTES.get(dtypes.get(c, ""), DEFAULT_TYPE_BYTES) for c in cols)
    rows = max(1_000, min(max_rows, (64 << 20) // max(1, row)))
    return {ARROW_MAX_RECORDS: str(rows), ARROW_MAX_BYTES: ARROW_BYTES_UNCHECKED}


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def oversize_groups(sizes: pd.DataFrame, key_cols, bytes_per_row: int, limit: int) -> pd.DataFrame:
    """Groups whose estimate exceeds ``limit``: key columns, ``count``, ``estimated_bytes``, ``max_rows``,
    largest first."""
    est = sizes["count"].astype("int64") * int(bytes_per_row)
    over = sizes.loc[est > limit, list(key_cols) + ["count"]].copy()
    over["estimated_bytes"] = est[est > limit]
    over["max_rows"] = max(1, limit // bytes_per_row)
    return over.sort_values("count", ascending=False, kind="stable")


def check_group_memory(sizes: pd.DataFrame, key_cols, bytes_per_row: int, limit: int, policy: str) -> pd.DataFrame:
    """Raise ``InputError`` naming the oversize groups (``refuse``), or return them (``subsample``);
    an empty frame when every group fits."""
    if policy not in OVERSIZE_POLICIES:
        raise InputError(f"oversize={policy!r}: expected one of {OVERSIZE_POLICIES}.")
    if limit <= 0:
        raise InputError(f"max_group_bytes={limit}: expected a positive number of bytes, e.g. {1 << 30} (1 GiB).")
    over = oversize_groups(sizes, key_cols, bytes_per_row, limit)
    if len(over) and policy == "refuse":
        shown = [f"{key_text(tuple(key_cols), tuple(r[c] for c in key_cols))} ({int(r['count']):,} rows, "
                 f"~{human(r['estimated_bytes'])})" for _, r in over.head(3).iterrows()]
        more = f" and {len(over) - 3} more" if len(over) > 3 else ""
        raise InputError(
            f"{len(over)} group(s) too large to fit on one worker: {'; '.join(shown)}{more}. The limit is "
            f"max_group_bytes={limit:,} (~{human(limit)}, {bytes_per_row} bytes per row, so at most "
            f"{int(over['max_rows'].iloc[0]):,} rows). Raise max_group_bytes if the workers have the memory, "
            "or set oversize='subsample' to train those groups on a seeded sample of that many rows.")
    return over


def sample_fractions(over: pd.DataFrame, key_cols) -> pd.DataFrame:
    """Per oversize group, the fraction of rows to keep (the rest of the groups keep all)."""
    out = over[list(key_cols)].copy()
    out[FRACTION_COL] = (over["max_rows"] / over["count"]).clip(upper=1.0).astype("float64")
    return out
