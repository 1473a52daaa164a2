"""Frozen configuration objects: declared once, passed to both sides of the pandas UDF."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

FailurePolicy = Literal["raise", "record"]
Task = Literal["regression", "classification"]

FAILURE_POLICIES = ("raise", "record")
TASKS = ("regression", "classification")

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


@dataclass(frozen=True)
class TrainSpec:
    """What to train for every group.

    ``estimator`` is any unfitted scikit-learn estimator or Pipeline; it is cloned per group.
    ``task`` is inferred from the estimator (``is_classifier``) when left as ``None``.
    """

    group_cols: tuple[str, ...]
    feature_cols: tuple[str, ...]
    label_col: str
    estimator: object
    task: Task | None = None
    seed: int = 42
    min_rows: int = 10
    holdout_fraction: float = 0.2
    failure_policy: FailurePolicy = "record"
    training_run_id: str = ""
    pass_dataframe: bool = False  # estimators get a DataFrame with feature names (slower; column-selecting pipelines)
    max_group_bytes: int = 2 << 30  # estimated worker memory of one group (see memory.py); larger groups are...
    oversize: Literal["refuse", "subsample"] = "refuse"  # ...refused before the job, or trained on a seeded sample
    sampled_from: tuple = ()  # set by the planner: ((canonical key, input rows), ...) of subsampled groups
    model_format: str = "pickle5"  # or "skops": no code runs at load, only trusted types (serialization.py)
    trusted_types: tuple[str, ...] = ()  # skops: types trusted beyond serialization.DEFAULT_TRUSTED_TYPES
    max_model_bytes: int = 512 << 20  # a group whose serialized model is larger is failed (at most MODEL_BYTES_CEILING)
    max_fit_seconds: float | None = None  # a group whose fit runs longer is failed (fitting.fit_time_limit); None: off

    def __post_init__(self) -> None:
        # Accept lists from callers; store tuples so the spec is hashable and immutable.
        object.__setattr__(self, "group_cols", tuple(self.group_cols))
        object.__setattr__(self, "feature_cols", tuple(self.feature_cols))
        if self.model_format != "pickle5" or self.trusted_types:  # the default needs no check (nor the import)
            from manymodels.serialization import check_format

            object.__setattr__(self, "trusted_types", check_format(self.model_format, self.trusted_types))


def project_home() -> Path:
    """Folder of the embedded default's local state (MLflow store, model tables, data).

    ``MANYMODELS_HOME`` overrides it; the default is ``.manymodels`` in the working directory.
    """
    return Path(os.environ.get("MANYMODELS_HOME", ".manymodels")).resolve()


def on_databricks() -> bool:
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


@dataclass(frozen=True)
class PanelSpec:
    """A synthetic panel: per-group linear truth ``y = X @ beta_g + intercept_g + noise``."""

    n_groups: int = 1000
    mean_rows: int = 200
    n_features: int = 5
    size_distribution: Literal["uniform", "poisson", "zipf"] = "poisson"
    zipf_exponent: float = 1.2
    min_rows: int = 20
    noise: float = 0.5
    seed: int = 7
    key_cols: tuple[str, ...] = field(default=("store", "item"))
