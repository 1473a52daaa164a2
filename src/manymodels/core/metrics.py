"""Per-group metrics, computed with numpy only so they cost little per group."""
from __future__ import annotations

import numpy as np

from manymodels.core.schema import METRIC_NAMES


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    y = np.asarray(y, dtype="float64")
    pred = np.asarray(pred, dtype="float64")
    resid = y - pred
    ss_res = float(resid @ resid)
    centered = y - y.mean()
    ss_tot = float(centered @ centered)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return {"r2": r2, "rmse": float(np.sqrt(ss_res / len(y)))}


def classification_metrics(model: object, X, y: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import log_loss, roc_auc_score

    pred = model.predict(X)
    out = {"accuracy": float(np.mean(pred == np.asarray(y)))}
    if hasattr(model, "predict_proba"):
        classes = list(getattr(model, "classes_", []))
        proba = model.predict_proba(X)
        try:
            out["log_loss"] = float(log_loss(y, proba, labels=classes))
        except ValueError:
            out["log_loss"] = float("nan")
        try:
            if len(classes) == 2:
                out["roc_auc"] = float(roc_auc_score(y, proba[:, 1]))
            else:
                out["roc_auc"] = float(roc_auc_score(y, proba, multi_class="ovr", labels=classes))
        except ValueError:  # one class only in this split: AUC is undefined
            out["roc_auc"] = float("nan")
    return out


def metric_row(split: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{split}_{name}": values.get(name, float("nan")) for name in METRIC_NAMES}
