"""Frozen configuration objects: declared once, passed to both sides of the pandas UDF."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FailurePolicy = Literal["raise", "record"]
Task = Literal["regression", "classification"]

FAILURE_POLICIES = ("raise", "record")
TASKS = ("regression", "classification")


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
    group_params: tuple[str, ...] = ()  # distinct per-group parameter sets (JSON), see core/group_params.py
    model_format: str = "pickle5"  # or "skops": no code runs at load, only trusted types (core/model_bytes.py)
    trusted_types: tuple[str, ...] = ()  # skops: types trusted beyond model_bytes.DEFAULT_TRUSTED_TYPES
    max_model_bytes: int = 512 << 20  # a group whose serialized model is larger is failed (at most MODEL_BYTES_CEILING)
    max_fit_seconds: float | None = None  # a group whose fit runs longer is failed (fitting.fit_time_limit); None: off

    def __post_init__(self) -> None:
        # Accept lists from callers; store tuples so the spec is hashable and immutable.
        object.__setattr__(self, "group_cols", tuple(self.group_cols))
        object.__setattr__(self, "feature_cols", tuple(self.feature_cols))
        if self.model_format != "pickle5" or self.trusted_types:  # the default needs no check (nor the import)
            # lazy: `import manymodels` (which imports this module) stays free of scikit-learn's import time
            from manymodels.core.model_bytes import check_format

            object.__setattr__(self, "trusted_types", check_format(self.model_format, self.trusted_types))


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
