"""The one packing pipeline of per-group work: training and per-group search both run through it.

The groups are planned onto partitions (largest first, bin-packed by rows: ``core.planning``); each row meets
its group's bin through a broadcast join of that small plan; partitions are sorted by key so every group
arrives contiguous; and a pure stream (``core.fitting.fit_stream``, ``core.search.search_stream``) runs over
them in one ``mapInPandas`` pass, with the Spark task attempt passed in (``worker_process.with_task_attempt``).
Float keys that were NaN come back NaN.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import pandas as pd
from pyspark.sql import functions as F

from manymodels.core.planning import BIN_COL, TASKS_PER_CORE, partition_labels, plan
from manymodels.spark.session import col, cols, keys_frame, map_in_pandas, parallelism
from manymodels.spark.worker_process import with_task_attempt


@dataclass
class Packing:
    """Where each group goes: ``assignment`` (the key columns, ``BIN_COL`` and any per-group columns added
    before ``pack``) over ``n_parts`` partitions."""

    keys: list[str]
    assignment: pd.DataFrame
    n_parts: int

    def task_groups(self) -> list[int]:
        """Groups per planned task, in partition order (what progress counts)."""
        per_bin = self.assignment.groupby(BIN_COL).size()
        return per_bin.reindex(partition_labels(self.n_parts), fill_value=0).tolist()


def plan_groups(df, sizes: pd.DataFrame, keys, tasks_per_core: int | None = None) -> Packing:
    """Plan ``sizes`` (the key columns and ``count``) onto the session's partitions."""
    assignment, n_parts = plan(sizes, parallelism(df.sparkSession), tasks_per_core or TASKS_PER_CORE)
    return Packing(list(keys), assignment, n_parts)


def assignment_schema(df, keys, doubles=(), strings=(), ints=()):
    """The plan's Spark schema: the keys with the input's types, the bin, then per-group double, string and int
    columns."""
    from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

    fields = {f.name: f for f in df.schema.fields}
    return StructType([StructField(k, fields[k].dataType, False) for k in keys]
                      + [StructField(BIN_COL, IntegerType(), False)]
                      + [StructField(c, DoubleType(), False) for c in doubles]
                      + [StructField(c, StringType(), True) for c in strings]
                      + [StructField(c, IntegerType(), False) for c in ints])


def plan_frame(df, packing: Packing, *, doubles=(), strings=(), ints=()):
    """The plan as a small Spark frame to broadcast: keys, bin and the named per-group columns."""
    keys = packing.keys
    return keys_frame(df.sparkSession, packing.assignment[keys + [BIN_COL, *doubles, *strings, *ints]],
                      assignment_schema(df, keys, doubles, strings, ints))


def run_packed(df, packing: Packing, stream, schema, *, used, plan_df=None, doubles=(), passed=(),
               row_filter=None, **stream_args):
    """``stream(batches, attempt=..., **stream_args)`` over ``df``'s ``used`` columns, each partition holding
    whole groups sorted by key. ``doubles``: per-group columns of ``plan_df`` joined to every row, for
    ``row_filter`` (a Column) to read; they are dropped before the stream sees the rows. ``passed``: per-group
    columns of ``plan_df`` joined to every row and kept for the stream (a group's parameter set)."""
    keys = packing.keys
    plan_df = plan_frame(df, packing, doubles=doubles) if plan_df is None else plan_df
    rows = df.select(*cols(used)).join(plan_df.select(*cols(keys), BIN_COL, *doubles, *passed).hint("broadcast"),
                                       on=keys, how="inner")
    if row_filter is not None:
        rows = rows.where(row_filter)
    rows = (rows.drop(*doubles)
            .repartition(packing.n_parts, BIN_COL)
            .sortWithinPartitions(BIN_COL, *cols(keys))
            .drop(BIN_COL))
    out = map_in_pandas(rows, partial(with_task_attempt, stream, **stream_args), schema)
    return restore_nan_keys(out, keys, dict(df.dtypes))


def restore_nan_keys(out, keys, types: dict):
    """Spark reads a NaN that a pandas UDF returns as null; null keys are refused before any job, so a null
    float key coming out of the UDF is a NaN key, and gets its NaN back."""
    floats = [k for k in keys if types.get(k) in ("float", "double")]
    if not floats:
        return out
    nan = {k: F.when(col(k).isNull(), F.lit(float("nan")).cast(types[k])).otherwise(col(k)).alias(k) for k in floats}
    return out.select(*[nan.get(c, col(c)) for c in out.columns])
