"""The one input reader: a table name, a Parquet, CSV or Delta folder, or files read whole (one group per file).

An explicit ``fmt`` beats guessing; otherwise a name with no path separator is a table, a path naming ``.csv``
is CSV, a folder with ``_delta_log`` is Delta, and any other path Parquet. Columns are checked by name before
any job runs."""
from __future__ import annotations

from pathlib import Path

from pyspark.sql import functions as F

from manymodels.core.checks import check_path
from manymodels.core.planning import TASKS_PER_CORE
from manymodels.errors import InputError, short_list
from manymodels.spark.session import parallelism

FORMATS = ("table", "parquet", "csv", "delta")


def input_format(source: str, fmt: str | None = None) -> str:
    """The format ``source`` is read as: ``fmt`` when given; otherwise a name without ``/`` is a table, a path
    naming ``.csv`` is CSV, a folder holding ``_delta_log`` is Delta, and any other path is Parquet."""
    if fmt:
        if fmt not in FORMATS:
            raise InputError(f"fmt={fmt!r} for {source!r}: expected one of {', '.join(FORMATS)} (or nothing, to "
                             "decide from the source: a name without '/' is a table, '.csv' is CSV, a folder with "
                             "_delta_log is Delta, any other path Parquet).")
        return fmt
    if "/" not in source:
        return "table"
    if ".csv" in source.lower():
        return "csv"
    if "://" not in source and (Path(source) / "_delta_log").is_dir():
        return "delta"
    return "parquet"


def read_any(spark, source: str, *, fmt: str | None = None):
    """A table name or a Parquet, CSV or Delta path as a Spark DataFrame (see ``input_format``). A local or FUSE
    path must exist: a missing one is refused with what its folder holds."""
    fmt = input_format(source, fmt)
    if fmt == "table":
        return spark.read.table(source)
    check_path(source, "input_path")
    reader = spark.read.format(fmt)
    if fmt == "csv":
        reader = reader.option("header", "true").option("inferSchema", "true")
    return reader.load(source)


def read_input(spark, source: str, *, key_cols, feature_cols, label_col, fmt: str | None = None):
    """``read_any`` with the named columns selected; a missing column is refused before any job, naming the
    columns the source has."""
    df = read_any(spark, source, fmt=fmt)
    wanted = list(dict.fromkeys(list(key_cols) + list(feature_cols) + [label_col]))
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise InputError(f"Column(s) {short_list(missing)} not found in {source}: found {short_list(df.columns, 12)}. "
                         "Pass the right key_cols / feature_cols / label_col.")
    return df.select(*wanted)


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
