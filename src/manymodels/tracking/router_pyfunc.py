"""The registered router model: the MLflow pyfunc that routes each row to its group's model (``routing.route_predict``).

Kept apart from ``core.routing`` so that only the driver (logging) and MLflow's loader import mlflow; the packed store,
the index and ``route_predict`` serve the Python workers without it.
"""
from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import pandas as pd

from manymodels.core.model_bytes import LoadPolicy
from manymodels.core.routing import class_labels, route_predict
from manymodels.storage.packed_store import MODELS_FILE, load_index, read_blobs

PROBA_PARAM = "predict_proba"
PROBA_PREFIX = "probability_"


def param_schema(task: str | None):
    """The router's inference params: ``predict_proba`` (boolean, default False) for a classification router (adds a
    ``probability_<class>`` column per class), none otherwise."""
    from mlflow.types import ParamSchema, ParamSpec

    return ParamSchema([ParamSpec(PROBA_PARAM, "boolean", False)]) if task == "classification" else None


def probability_columns(probabilities: pd.Series) -> pd.DataFrame:
    """``probability_<class>`` columns from per-row ``{class: probability}`` dicts (None: no prediction); the
    classes are the union over the rows' groups, sorted; a class a group's model does not know is NaN there."""
    frame = pd.DataFrame.from_records([p if isinstance(p, dict) else {} for p in probabilities],
                                      index=probabilities.index)
    frame = frame.reindex(columns=sorted(frame.columns, key=str)).astype("float64")
    return frame.rename(columns=lambda c: f"{PROBA_PREFIX}{c}")


class GroupRouter(mlflow.pyfunc.PythonModel):
    """Pyfunc that dispatches each row to its group's model (see the module docstring)."""

    def __init__(self, key_cols, feature_cols, training_run_id: str, pass_dataframe: bool = False,
                 task: str | None = None):
        self.key_cols = list(key_cols)
        self.task = task  # "classification": predictions are class labels as text, as the signature says
        self.feature_cols = list(feature_cols)
        self.training_run_id = training_run_id
        self.pass_dataframe = pass_dataframe
        self._root: Path | None = None
        self._index: dict | None = None
        self._policy: LoadPolicy | None = None

    def load_context(self, context):
        """The index (checksums, formats) and the load policy come from the version's index file, never from the
        ``models.parquet`` that holds the blobs (``model_index``)."""
        self._root = Path(context.artifacts["group_models"])
        index = load_index(self._root, what=f"training run {self.training_run_id}")
        self._index, self._policy = index.entries, index.policy

    def _load_blobs(self, entries: list[dict]) -> dict[str, bytes]:
        return read_blobs(self._root / MODELS_FILE, entries)

    def predict(self, context, model_input, params=None):
        """``prediction``, ``status``, ``error`` per row; with ``params={"predict_proba": True}`` (a classification
        router) also ``probability_<class>`` columns."""
        if self._index is None:
            self.load_context(context)
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        classification = getattr(self, "task", None) == "classification"  # routers pickled before it: as they were
        with_proba = classification and bool((params or {}).get(PROBA_PARAM, False))
        out = route_predict(frame, key_cols=self.key_cols, feature_cols=self.feature_cols, index=self._index,
                            load_blobs=self._load_blobs, run_label=f"training run {self.training_run_id}",
                            pass_dataframe=self.pass_dataframe, policy=getattr(self, "_policy", None),
                            with_proba=with_proba)
        if classification:
            out["prediction"] = class_labels(out["prediction"])
        if with_proba:
            out = pd.concat([out.drop(columns=["probabilities"]), probability_columns(out["probabilities"])], axis=1)
        return out
