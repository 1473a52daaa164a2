"""The one place that decides which Spark session the code runs on.

Order: the active session on Databricks; Databricks Connect when it is installed and configured
(see ``databricks_connect_session``); Spark Connect when ``SPARK_REMOTE`` is set; the given master
(argument or ``MANYMODELS_SPARK_MASTER``, e.g. ``spark://host:7077``); otherwise local Spark on all
cores with settings that suit pandas UDFs. Nothing here runs at import time.
"""
from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager

from manymodels.core.schema import quoted
from manymodels.settings import (
    ARROW_ENABLED,
    DATABRICKS_CONNECT_ENV,
    ROW_BOUNDED_ARROW,
    SHUFFLE_PARTITIONS,
    SPARK_MASTER_ENV,
    on_databricks,
)

# Python workers must run this interpreter, or they cannot import pandas or manymodels.
PYTHON_CONF = "spark.pyspark.python"
LOCAL_DEFAULTS = {
    ARROW_ENABLED: "true",
    **ROW_BOUNDED_ARROW,  # 10,000-row batches bounded by rows only (see settings.ARROW_MAX_BYTES)
    "spark.sql.execution.pyspark.udf.faulthandler.enabled": "true",
    "spark.python.worker.faulthandler.enabled": "true",
    "spark.driver.memory": "4g",
    "spark.ui.showConsoleProgress": "false",  # manymodels draws its own bar (spark/progress.py); two garble
    "spark.sql.session.timeZone": "UTC",
    "spark.log.level": "WARN",
}


def col(name: str):
    """The column ``name`` exactly as named (dots, spaces and back-quotes included): use it, never a bare
    string, wherever a user's column name reaches Spark (``select``, ``groupBy``, sorts, expressions)."""
    from pyspark.sql import functions as F

    return F.col(quoted(name))


def cols(names) -> list:
    return [col(n) for n in names]


def _needs_alias(name: str) -> bool:
    return "." in name or "`" in name


def map_in_pandas(df, func, schema, *, arrow: bool = False):
    """``df.mapInPandas(func, schema)`` (``mapInArrow`` with ``arrow``) for any column names.

    Classic PySpark builds the UDF's arguments with ``df[name]``, which reads a dot as a struct field and
    fails on a column named ``price.eur``; such inputs travel under plain aliases and get their names back in
    each batch before ``func`` sees it."""
    names = list(df.columns)
    run = df.mapInArrow if arrow else df.mapInPandas
    if not any(_needs_alias(n) for n in names):
        return run(func, schema=schema)
    from functools import partial

    aliased = df.select(*[col(n).alias(f"_mm_col{i}") for i, n in enumerate(names)])
    body = partial(_arrow_renamed if arrow else _pandas_renamed, func=func, names=tuple(names))
    return (aliased.mapInArrow if arrow else aliased.mapInPandas)(body, schema=schema)


def _pandas_renamed(batches, *, func, names):
    def renamed():
        for batch in batches:
            batch.columns = list(names)
            yield batch
    yield from func(renamed())


def _arrow_renamed(batches, *, func, names):
    yield from func(batch.rename_columns(list(names)) for batch in batches)


def keys_frame(spark, pdf, schema):
    """``spark.createDataFrame(pdf, schema)`` for a small frame of group keys. Arrow's conversion reads a NaN in
    a float column as null, which would turn the NaN group's key into a null that joins nothing: such frames go
    through plain rows instead, which keep NaN."""
    import numpy as np

    has_nan = any(pdf[c].dtype.kind == "f" and np.isnan(pdf[c].to_numpy()).any() for c in pdf.columns)
    if not has_nan:
        return spark.createDataFrame(pdf, schema=schema)
    return spark.createDataFrame([tuple(r) for r in pdf.itertuples(index=False, name=None)], schema=schema)


def get_spark(master: str | None = None, app_name: str = "manymodels", conf: dict[str, str] | None = None):
    """Return the Spark session for this environment (see the module docstring for the order)."""
    from pyspark.sql import SparkSession

    if on_databricks():
        return SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()
    if not master:
        remote = databricks_connect_session()
        if remote is not None:
            return remote
    if os.environ.get("SPARK_REMOTE") and not master:
        if os.environ["SPARK_REMOTE"].startswith("local"):  # a Connect server started here: workers use our Python
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        return SparkSession.builder.remote(os.environ["SPARK_REMOTE"]).appName(app_name).getOrCreate()
    active = SparkSession.getActiveSession()
    if active is not None and not master:
        return active
    master = master or os.environ.get(SPARK_MASTER_ENV) or "local[*]"
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    settings = dict(LOCAL_DEFAULTS)
    settings[PYTHON_CONF] = sys.executable
    cores = local_cores(master)
    if cores:
        settings["spark.default.parallelism"] = str(cores)
        settings[SHUFFLE_PARTITIONS] = str(max(2, 2 * cores))
    settings.update(conf or {})
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def master_of(spark) -> str | None:
    """The session's ``spark.master``; None when there is no session or the conf cannot say (Spark Connect)."""
    try:
        return None if spark is None else spark.conf.get("spark.master", None)
    except Exception:  # noqa: BLE001 - a Connect session without that conf: nothing to say
        return None


def databricks_connect_session():
    """A Databricks Connect session, or None when databricks-connect is not installed or not configured.

    databricks-connect replaces pyspark in the environment (``pip uninstall pyspark && pip install
    "databricks-connect==<your runtime>.*"``), so it is not in the default environment. Configured means
    ``DATABRICKS_CLUSTER_ID`` or ``DATABRICKS_SERVERLESS_COMPUTE_ID=auto`` (with the SDK's usual host and
    credentials), or ``MANYMODELS_DATABRICKS_CONNECT=1`` with a profile that names the compute. The models
    then belong in that workspace: MLflow defaults to the ``databricks`` tracking URI (and so the
    ``databricks-uc`` registry, three-level model names) unless MLFLOW_TRACKING_URI says otherwise.
    """
    forced = os.environ.get(DATABRICKS_CONNECT_ENV[0], "").lower() in ("1", "true", "yes")
    if not forced and not any(os.environ.get(name) for name in DATABRICKS_CONNECT_ENV[1:]):
        return None
    try:
        from databricks.connect import DatabricksSession
    except ImportError:
        return None
    os.environ.setdefault("MLFLOW_TRACKING_URI", "databricks")
    return DatabricksSession.builder.getOrCreate()


def local_cores(master: str) -> int | None:
    match = re.fullmatch(r"local\[(\d+|\*)(?:,\d+)?\]|local", master)
    if not match:
        return None
    if match.group(1) is None:  # plain "local"
        return 1
    if match.group(1) == "*":
        return os.cpu_count() or 1
    return int(match.group(1))


def parallelism(spark) -> int:
    """Cores available to tasks, read from the session's configuration (Spark Connect safe)."""
    value = spark.conf.get("spark.default.parallelism", None)
    if value:
        return int(value)
    cores = local_cores(spark.conf.get("spark.master", "") or "")
    if cores:
        return cores
    max_cores = spark.conf.get("spark.cores.max", None)
    if max_cores:
        return int(max_cores)
    return max(1, int(spark.conf.get(SHUFFLE_PARTITIONS, "8")) // 2)


def is_connect(spark) -> bool:
    return type(spark).__module__.startswith("pyspark.sql.connect")


@contextmanager
def session_conf(spark, settings: dict[str, str]):
    """Set session settings for one job and restore them after (Spark Connect safe).

    They are tuning only: a setting the session refuses (Databricks serverless allows few) is skipped.
    """
    old = {}
    for k, v in settings.items():
        try:
            previous = spark.conf.get(k, None)
            spark.conf.set(k, v)
            old[k] = previous
        except Exception:  # noqa: BLE001 - e.g. CONFIG_NOT_AVAILABLE on serverless: run with the default
            continue
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)
