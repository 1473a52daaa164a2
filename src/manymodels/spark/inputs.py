"""TODO docstring."""
from __future__ import annotations

from pyspark.sql import functions as F

from manymodels.core.checks import check_path
from manymodels.core.planning import TASKS_PER_CORE
from manymodels.errors import InputError, short_list
from manymodels.spark.session import parallelism


def read_input(spark, source: str, *, key_cols, feature_cols, label_col, fmt: str | None = None):
    """Read a user table, a Parquet folder or CSV files and select the named columns.

    ``source`` is a table name (``catalog.schema.table``) or a path; ``fmt`` is ``parquet``, ``csv`` or
    ``table`` and is guessed from the path when omitted. CSV columns are cast to double for features.
    """
    fmt = fmt or ("csv" if ".csv" in source else "table" if "/" not in source else "parquet")
    check_path(source, "input_path")
    if fmt == "table":
        df = spark.read.table(source)
    elif fmt == "parquet":
        df = spark.read.parquet(source)
    elif fmt == "csv":
        df = spark.read.option("header", "true").option("inferSchema", "true").csv(source)
    else:
        raise InputError(f"fmt={fmt!r}: expected 'parquet', 'csv' or 'table'.")
    wanted = list(dict.fromkeys(list(key_cols) + list(feature_cols) + [label_col]))
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise InputError(f"Column(s) {short_list(missing)} not found in {source}: found {short_list(df.columns, 12)}. "
                         "Pass the right key_cols / feature_cols / label_col.")
    return df.select(*wanted)


def read_any(spark, source: str):
    """A table name, a Parquet folder or CSV path, as a Spark DataFrame."""
    if "/" not in source:
        return spark.read.table(source)
    if ".csv" in source:
        return spark.read.option("header", "true").option("inferSchema", "true").csv(source)
    return spark.read.parquet(source)


# Compression codecs Hadoop cannot split (a file of these is read whole by one task); bzip2 and plain text split.
UNSPLITTABLE_SUFFIXES = (".gz", ".deflate", ".snappy", ".lz4", ".zst")


def read_files(spark, path: str, *, feature_cols, label_col, label_type: str = "double"):
    """Read CSV files with the file name as the ``source_file`` key: gzipped ones one partition each, as they come;
    if any file can be split (plain, bzip2), its rows are first clustered by file (one shuffle)."""
    df = spark.read.option("header", "true").csv(path)
    cols = [F.col("_metadata.file_name").alias(FILE_KEY)]
    cols += [F.col(c).cast("double").alias(c) for c in feature_cols if c in df.columns]
    if label_col in df.columns:
        cols.append(F.col(label_col).cast(label_type).alias(label_col))
    missing = [c for c in list(feature_cols) + [label_col] if c not in df.columns]
    if missing:
        raise InputError(f"Column(s) {short_list(missing)} not found in the CSV files at {path}: found "
                         f"{short_list(df.columns, 12)}. Fix feature_cols / label_col or the files' header.")
    files = df.inputFiles()
    df = df.select(*cols)
    if all(f.lower().endswith(UNSPLITTABLE_SUFFIXES) for f in files):
        return df  # each file is read whole, in order, by one task: its rows are contiguous already
    # A split file spreads over several tasks, and fit_stream would fit each part as a group of its own.
    n_parts = max(1, min(len(files), parallelism(spark) * TASKS_PER_CORE))
    return df.repartition(n_parts, FILE_KEY).sortWithinPartitions(FILE_KEY)


FILE_KEY = "source_file"
