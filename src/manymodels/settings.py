"""Every environment variable and Spark setting manymodels reads, in one place (docs/configuration.md lists them
with their defaults). A leaf: it imports nothing of manymodels."""
from __future__ import annotations

import os
from pathlib import Path

VERSION = "0.1.0"  # the package's version: the same as pyproject.toml's (tests/unit/test_layers.py checks)


# Spark settings used by the embedded default; named so tests and docs can refer to them.
ARROW_ENABLED = "spark.sql.execution.arrow.pyspark.enabled"


ARROW_MAX_RECORDS = "spark.sql.execution.arrow.maxRecordsPerBatch"


# Spark 4 also caps Arrow batches by bytes (default 64 MB) and, to do so, sums the batch's buffer sizes after
# every row it adds: a quarter of the JVM's time when scoring 20 float columns (JFR). The value INT_MAX turns
# the check off, leaving the row cap. Training sizes its rows by width (memory.arrow_batch_conf); tuning and
# fold ensembles, with 100,000-row batches, set Spark's own byte cap back (ARROW_BYTE_CAP).
ARROW_MAX_BYTES = "spark.sql.execution.arrow.maxBytesPerBatch"


ARROW_BYTES_UNCHECKED = str(2**31 - 1)


ARROW_BYTE_CAP = str(64 << 20)


# 10,000-row batches bounded by rows alone: the embedded session's default and the scoring job's setting.
ROW_BOUNDED_ARROW = {ARROW_MAX_RECORDS: "10000", ARROW_MAX_BYTES: ARROW_BYTES_UNCHECKED}


SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"


# Arrow's binary arrays have 32-bit offsets: a model blob crossing from the Python worker to the JVM must stay below
# 2 GiB; 1 MiB is left for the rest of its row. ``TrainSpec.max_model_bytes`` may not exceed it.
MODEL_BYTES_CEILING = (2 << 30) - (1 << 20)


# ---------------------------------------------------------------- environment variables

HOME_ENV = "MANYMODELS_HOME"  # folder of the embedded default's local state
SPARK_MASTER_ENV = "MANYMODELS_SPARK_MASTER"  # the embedded session's master (default local[*])
EXPERIMENT_ENV = "MANYMODELS_EXPERIMENT"  # the MLflow experiment when none is passed
DATABRICKS_RUNTIME_ENV = "DATABRICKS_RUNTIME_VERSION"  # set by Databricks on its clusters


def project_home() -> Path:
    """Folder of the embedded default's local state (MLflow store, model tables, data).

    ``MANYMODELS_HOME`` overrides it; the default is ``.manymodels`` in the working directory.
    """
    return Path(os.environ.get(HOME_ENV, ".manymodels")).resolve()


def on_databricks() -> bool:
    return DATABRICKS_RUNTIME_ENV in os.environ


# Extra module prefixes ``estimator`` / ``learner`` may name (comma-separated, e.g. ``xgboost,lightgbm``): set by
# whoever configures the job's environment, deliberately not a job parameter (a job parameter could then allow itself).
ALLOWED_MODULES_ENV = "MANYMODELS_ALLOWED_ESTIMATOR_MODULES"


# Where a scoring job may write a folder (comma-separated roots); set with the job's environment, not a parameter.
OUTPUT_ROOT_ENV = "MANYMODELS_OUTPUT_ROOT"


# "delta" or "parquet": the format of table-name model table versions (default: delta on Databricks)
TABLE_FORMAT_ENV = "MANYMODELS_TABLE_FORMAT"


# seconds between progress lines of a long Spark job (training, search, ensembles, scoring); 0: none
PROGRESS_ENV = "MANYMODELS_PROGRESS_SECONDS"


# the progress bar (tqdm): 0 off (log lines stay), 1 always; unset: in notebooks and on terminals (spark/progress.py)
PROGRESS_BAR_ENV = "MANYMODELS_PROGRESS"


# a folder every worker can read, for staged model stores and search data (storage.staging.staging_root)
STAGING_ENV = "MANYMODELS_STAGING"


# the Unity Catalog catalog, schema and Volume of Databricks defaults, and the user of per-user folders
CATALOG_ENV, SCHEMA_ENV, VOLUME_ENV, USER_ENV = ("MANYMODELS_CATALOG", "MANYMODELS_SCHEMA", "MANYMODELS_VOLUME",
                                                 "MANYMODELS_USER")


# Databricks Connect is used when one of these names the remote compute (or the first is "1", which
# leaves the choice to the SDK profile: DATABRICKS_CONFIG_PROFILE or ~/.databrickscfg's DEFAULT).
DATABRICKS_CONNECT_ENV = ("MANYMODELS_DATABRICKS_CONNECT", "DATABRICKS_CLUSTER_ID", "DATABRICKS_SERVERLESS_COMPUTE_ID")


# megabytes of deserialized models each Python worker keeps (default 1024)
CACHE_ENV = "MANYMODELS_MODEL_CACHE_MB"


# the bundle's default catalog, schema and Volume
DEFAULT_CATALOG, DEFAULT_SCHEMA, DEFAULT_VOLUME = "main", "manymodels", "manymodels_data"


def volume_path(catalog: str, schema: str, volume: str, *parts: str) -> str:
    """``/Volumes/<catalog>/<schema>/<volume>/<parts...>``."""
    return "/".join([f"/Volumes/{catalog}/{schema}/{volume}", *(p.strip("/") for p in parts if p.strip("/"))])
