"""The registered router model: one MLflow pyfunc per training run that predicts each row with its group's model.

Its artifacts are an index (``index.parquet``: canonical key, status, error, relative model path,
SHA-256, library versions) and one model file per trained group. ``load_context`` reads only the
index; a group's model is read, checked against its SHA-256 and unpickled the first time a row of
that group arrives, then kept in the process-wide ``MODEL_CACHE``.

Output columns: the key columns, ``prediction``, ``status`` (``ok``, ``unknown_group`` or the
group's training status) and ``error`` (naming the key and the reason when there is no prediction).
"""
from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from manymodels.keys import canonical_key, key_text
from manymodels.serialization import MODEL_CACHE

UNKNOWN_GROUP = "unknown_group"
INDEX_FILE = "index.parquet"
INDEX_COLUMNS = ("key", "status", "error", "path", "model_sha256", "library_versions")


def route_predict(df: pd.DataFrame, *, key_cols, feature_cols, index: dict, load_blob, run_label: str = "") -> pd.DataFrame:
    """Predict every row of ``df`` with its group's model (pure: ``load_blob(path) -> bytes`` reads a model file)."""
    n = len(df)
    prediction = np.full(n, np.nan, dtype=object)
    status = np.full(n, "ok", dtype=object)
    error = np.full(n, None, dtype=object)
    X_all = df.loc[:, list(feature_cols)]
    for key, positions in df.groupby(list(key_cols), sort=False, dropna=False).indices.items():
        entry = index.get(canonical_key(key))
        where = key_text(tuple(key_cols), key)
        if entry is None:
            status[positions] = UNKNOWN_GROUP
            error[positions] = f"no model for group {where} in {run_label or 'this training run'}"
            continue
        if entry["status"] != "ok":
            status[positions] = entry["status"]
            error[positions] = f"group {where} has no model: {entry['status']} in training ({entry['error']})"
            continue
        model = MODEL_CACHE.get(lambda e=entry: load_blob(e["path"]), entry["model_sha256"],
                                where=f"group {where} of {run_label}", versions=entry["library_versions"])
        prediction[positions] = model.predict(X_all.iloc[positions])
    out = df.loc[:, list(key_cols)].reset_index(drop=True)
    try:  # numeric predictions (regression, integer classes) as float; class labels stay as they are
        out["prediction"] = pd.to_numeric(pd.Series(prediction))
    except (ValueError, TypeError):
        out["prediction"] = pd.Series(prediction)
    out["status"] = status
    out["error"] = error
    return out


def read_index(path: str | Path) -> dict:
    frame = pd.read_parquet(path)
    return {tuple(k): row for k, row in zip(frame["key"], frame.drop(columns=["key"]).to_dict("records"))}


class GroupRouter(mlflow.pyfunc.PythonModel):
    """Pyfunc that dispatches each row to its group's model (see the module docstring)."""

    def __init__(self, key_cols, feature_cols, training_run_id: str):
        self.key_cols = list(key_cols)
        self.feature_cols = list(feature_cols)
        self.training_run_id = training_run_id
        self._root: Path | None = None
        self._index: dict | None = None

    def load_context(self, context):
        self._root = Path(context.artifacts["group_models"])
        self._index = read_index(self._root / INDEX_FILE)

    def _load_blob(self, rel_path: str) -> bytes:
        return (self._root / rel_path).read_bytes()

    def predict(self, context, model_input, params=None):
        if self._index is None:
            self.load_context(context)
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return route_predict(frame, key_cols=self.key_cols, feature_cols=self.feature_cols, index=self._index,
                             load_blob=self._load_blob, run_label=f"training run {self.training_run_id}")
