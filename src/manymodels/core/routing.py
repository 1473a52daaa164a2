"""Routing rows to their group's model (pure: never imports mlflow): what the registered router pyfunc
(``tracking.router_pyfunc.GroupRouter``) and the Python workers of ``spark.scoring.score_per_group`` both run.

``route_predict`` takes a batch of rows, the index of a run's models (``storage.model_index``: key, SHA-256,
format, size and position of every model, with the training run's ``model_bytes.LoadPolicy``, the one
authority on checksums, formats and policy) and a function that reads blobs (``storage.packed_store``). The
first batch that needs a group's model reads it, checks the SHA-256 the index records (and, for skops, the
trusted types) and deserializes it into the process-wide ``MODEL_CACHE``: each model is loaded once per
process. A model that raises is bisected (``predict_isolated``) so that only its failing rows lose their
prediction.

Output columns: the key columns, ``prediction``, ``status`` (``ok``, ``unknown_group``, the group's
training status, ``refused``: its stored model failed the checksum or the trusted types and was not
loaded, or ``predict_failed``: the model raised on that row; the other rows and groups still score) and
``error`` (naming the key, the run and the reason when there is no prediction).
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from manymodels.core.fitting import batch_settings
from manymodels.core.keys import canonical_key, key_text
from manymodels.core.model_bytes import MODEL_FORMAT, LoadPolicy, ModelRefusedError
from manymodels.core.model_cache import MODEL_CACHE

UNKNOWN_GROUP = "unknown_group"
REFUSED = "refused"  # the stored model failed its checksum or trusted-types check: not loaded, not used
PREDICT_FAILED = "predict_failed"  # the model raised on this row (a NaN its estimator refuses, say)
ISOLATE_ROWS = 16  # failing rows bisected out per predict call before the rest of a failing range is given up


def route_predict(df: pd.DataFrame, *, key_cols, feature_cols, index: dict, load_blobs, run_label: str = "",
                  pass_dataframe: bool = False, with_proba: bool = False,
                  policy: LoadPolicy | None = None, refuse_all: str | None = None) -> pd.DataFrame:
    """Predict every row of ``df`` with its group's model.

    Pure: ``index`` maps a canonical key to its entry (status, error, model_sha256, library_versions, ...);
    ``load_blobs(entries) -> {sha: bytes}`` fetches the models not yet in ``MODEL_CACHE``, once per batch (and
    again for a model the bounded cache dropped while this batch was being scored).
    Models see the features as training gave them: a float matrix, or a DataFrame with ``pass_dataframe``.
    ``with_proba`` adds ``probabilities`` (class -> probability) for classifiers. ``policy`` (the training
    run's format and trusted types) decides what may be deserialized; a group whose model is refused
    (checksum mismatch, untrusted types) gets ``status="refused"`` and the reason, naming group and run.
    One ``predict`` call per group; when it raises, the group's rows are bisected (``predict_isolated``) so
    the rows that can be predicted are, and the others get a null prediction, ``status="predict_failed"``
    and the exception, naming group and run. ``refuse_all``: why no model of this version may be loaded (its
    index failed its check); every row is then ``refused`` with the reason, naming its group.
    """
    n = len(df)
    prediction = np.full(n, np.nan, dtype=object)
    status = np.full(n, "ok", dtype=object)
    error = np.full(n, None, dtype=object)
    proba = np.full(n, None, dtype=object)
    X_all = df.loc[:, list(feature_cols)]
    if not pass_dataframe:
        X_all = X_all.to_numpy(dtype="float64", na_value=np.nan)
    groups = [(key, positions, index.get(canonical_key(key)))
              for key, positions in df.groupby(list(key_cols), sort=False, dropna=False).indices.items()]
    missing = [] if refuse_all else [e for _, _, e in groups if e is not None and e["status"] == "ok" and
                                      (e["model_sha256"], _format(e)) not in MODEL_CACHE]
    blobs = load_blobs(missing) if missing else {}
    with batch_settings(X_all):  # one NaN/inf scan for the batch instead of one per group's predict
        for key, positions, entry in groups:
            where = key_text(tuple(key_cols), key)
            if refuse_all:  # the index itself failed its check: nothing of this version is loaded
                status[positions] = REFUSED
                error[positions] = (f"ModelIntegrityError: Refusing to load model group {where} of {run_label}: "
                                    f"{refuse_all}")
                continue
            if entry is None:
                status[positions] = UNKNOWN_GROUP
                error[positions] = f"no model for group {where} in {run_label or 'this training run'}"
                continue
            if entry["status"] == REFUSED:  # refused when its store was packed: the entry says why
                status[positions] = REFUSED
                error[positions] = entry["error"]
                continue
            if entry["status"] != "ok":
                status[positions] = entry["status"]
                error[positions] = f"group {where} has no model: {entry['status']} in training ({entry['error']})"
                continue
            sha = entry["model_sha256"]
            try:
                model = MODEL_CACHE.get(lambda: blobs[sha] if sha in blobs else load_blobs([entry])[sha], sha,
                                        where=f"group {where} of {run_label}",
                                        versions=entry["library_versions"],
                                        model_format=_format(entry), policy=policy)
            except ModelRefusedError as exc:  # this group only: its rows say why, the others still score
                status[positions] = REFUSED
                error[positions] = f"{type(exc).__name__}: {exc}"
                continue
            X = X_all.iloc[positions] if pass_dataframe else X_all[positions]
            call = partial(_predict_rows, model, X, with_proba=with_proba)
            for start, stop, result, exc in predict_isolated(call, len(positions)):
                rows = positions[start:stop]
                if exc is None:
                    prediction[rows], proba[rows] = result
                else:
                    status[rows] = PREDICT_FAILED
                    error[rows] = predict_error(f"group {where} of {run_label or 'this training run'}", exc,
                                                stop - start)
    out = df.loc[:, list(key_cols)].reset_index(drop=True)
    try:  # numeric predictions (regression, integer classes) as float; class labels stay as they are
        out["prediction"] = pd.Series(prediction) if with_proba else pd.to_numeric(pd.Series(prediction))
    except (ValueError, TypeError):
        out["prediction"] = pd.Series(prediction)
    if with_proba:
        out["probabilities"] = proba
    out["status"] = status
    out["error"] = error
    return out


def _format(entry: dict) -> str:
    return entry.get("model_format") or MODEL_FORMAT


def rows_of(X, start: int, stop: int):
    """Rows ``start:stop`` of a feature matrix or DataFrame."""
    return X.iloc[start:stop] if isinstance(X, pd.DataFrame) else X[start:stop]


def _predict_rows(model, X, start: int, stop: int, *, with_proba: bool):
    """``(predictions, probability dicts or None)`` of rows ``start:stop`` of ``X``."""
    X = rows_of(X, start, stop)
    if with_proba and hasattr(model, "predict_proba"):
        p = model.predict_proba(X)
        classes = [str(c) for c in model.classes_]
        pred = np.asarray(model.classes_, dtype=object)[p.argmax(axis=1)]
        return pred, [dict(zip(classes, row)) for row in p.tolist()]
    pred = model.predict(X)
    if len(pred) != stop - start:  # would misalign rows when written back
        raise ValueError(f"predict returned {len(pred)} values for {stop - start} rows")
    return pred, None


def predict_isolated(call, n: int, *, isolate_rows: int | None = None) -> list[tuple]:
    """Run ``call(start, stop)`` over rows ``0:n``; when it raises, bisect to isolate the failing rows.

    Returns ``(start, stop, result, exception)`` ranges covering ``0:n`` (unordered); ``exception`` is None
    where ``call`` succeeded. The first call covers every row (the usual, only, cost); each failing range is
    retried in halves, so ``k`` failing rows cost about ``2 k log2(n)`` calls. The retries are capped at what
    isolating ``isolate_rows`` rows takes (default ``ISOLATE_ROWS``); past it the remaining failing ranges are
    reported whole, so a model that fails on every row costs O(log n) calls, not one per row.
    """
    try:
        return [(0, n, call(0, n), None)]
    except Exception as exc:  # noqa: BLE001 - one row's failure must not lose the others
        failing = [(0, n, exc)]
    budget = 2 * (isolate_rows or ISOLATE_ROWS) * (int(np.log2(max(n, 1))) + 1)
    done = []
    while failing:
        start, stop, exc = failing.pop()
        if stop - start == 1 or budget <= 0:
            done.append((start, stop, None, exc))
            continue
        mid = (start + stop) // 2
        for a, b in ((start, mid), (mid, stop)):
            budget -= 1
            try:
                done.append((a, b, call(a, b), None))
            except Exception as part_exc:  # noqa: BLE001
                failing.append((a, b, part_exc))
    return done


def predict_error(what: str, exc: BaseException, n_rows: int) -> str:
    """The error of rows whose ``predict`` raised: what failed, the exception, and whether the row was isolated."""
    text = f"predict failed for {what}: {type(exc).__name__}: {str(exc)[:500]}"
    if n_rows > 1:
        text += (f" (raised for a range of {n_rows} rows not isolated further: more failing rows than the "
                 "retry budget; clean or impute the bad rows)")
    return text


def class_labels(prediction: pd.Series) -> pd.Series:
    """Predicted classes as text, missing ones as None (not NaN): the string column the signatures promise, even
    when no row of a batch got a prediction."""
    return prediction.map(lambda v: None if v is None or v != v else str(v)).astype(object)


