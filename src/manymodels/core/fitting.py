"""The pure pandas core of per-group training: no Spark, no MLflow, no files, no network.

``fit_group(key, pdf, spec=...)`` fits one group and returns one model-table row.
``fit_packed(pdf, spec=...)`` fits every group of a frame whose groups are contiguous, slicing
by key instead of building a DataFrame per group. ``fit_stream(batches, spec=...)`` does the
same over an iterator of Arrow batches (the ``mapInPandas`` contract), carrying a group that
spans two batches over to the next one.

Failing groups: with ``failure_policy="record"`` the row has ``status="failed"`` and the error
with a traceback tail; with ``"raise"`` a ``GroupFitError`` naming the group is raised. A fit running
past ``max_fit_seconds`` or a model serializing to more than ``max_model_bytes`` is such a failure. Groups
with fewer usable rows than ``min_rows`` (or only null labels) are ``skipped`` with the reason.
"""
from __future__ import annotations

import signal
import threading
import time
import traceback
from contextlib import contextmanager, nullcontext
from typing import Iterator

import numpy as np
import pandas as pd
import sklearn

from manymodels.core import model_bytes
from manymodels.core.estimators import EstimatorTemplate, params_json, task_of
from manymodels.core.fastchecks import numpy_fast_path
from manymodels.core.group_params import GROUP_PARAMS_COL, decoded
from manymodels.core.keys import canonical_key, group_seed, key_text
from manymodels.core.metrics import classification_metrics, metric_row, regression_metrics
from manymodels.core.packing import complete_groups, group_bounds
from manymodels.core.schema import (
    FIXED_NAMES,
    METRIC_COLUMNS,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    empty_model_table,
)
from manymodels.core.spec import TrainSpec

TRACEBACK_LINES = 12


class GroupFitError(RuntimeError):
    """Raised under ``failure_policy="raise"``; the message names the group."""


class FitTimeout(BaseException):
    """A fit ran past ``max_fit_seconds``. A ``BaseException`` so that an estimator catching ``Exception`` around
    its inner fits (a search with ``error_score``, say) cannot swallow it and run on without a limit."""


class ModelTooLarge(RuntimeError):
    """A fitted model's serialized bytes exceed ``max_model_bytes``."""


_NO_LIMIT = nullcontext()  # what a fit runs in without max_fit_seconds: a generator per group costs more


def _timeout_message(where: str, seconds: float, elapsed: float, interrupted: bool) -> str:
    how = ("interrupted" if interrupted else
           "finished but was over the limit (a fit outside the main thread, or one long native call, cannot be "
           "interrupted: it is caught when it returns)")
    return (f"fit of group {where} ran past max_fit_seconds={seconds:g} ({how} after {elapsed:.1f} s): not trained. "
            "Fix: raise max_fit_seconds (None for no limit), make the fit cheaper (fewer iterations or estimators, "
            "a smaller max_depth), or subsample the group.")


@contextmanager
def fit_time_limit(seconds: float | None, where: str):
    """Raise ``FitTimeout`` when the body runs past ``seconds`` (``None``: no limit).

    In the main thread (where Spark's Python worker runs a pandas UDF) a SIGALRM interrupts the body as soon as it
    runs Python bytecode again: most scikit-learn fits do between stages, trees or solver iterations, but one long
    native call is caught only when it returns, and threads started by the fit (``n_jobs``) are not stopped.
    Elsewhere signals are unavailable and the elapsed time is checked after the body. The previous handler and
    timer are always restored, so the alarm never reaches the next group or other code.
    """
    if seconds is None:
        yield
        return
    start = time.perf_counter()
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
    else:
        def _alarm(signum, frame):
            raise FitTimeout(_timeout_message(where, seconds, time.perf_counter() - start, True))

        previous = signal.signal(signal.SIGALRM, _alarm)
        outer, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if outer:  # someone else's timer was running: give it back what is left of it
                signal.setitimer(signal.ITIMER_REAL, max(outer - (time.perf_counter() - start), 1e-3), interval)
    elapsed = time.perf_counter() - start
    if elapsed > seconds:  # no signal, or an alarm the estimator swallowed
        raise FitTimeout(_timeout_message(where, seconds, elapsed, False))


def check_model_size(blob: bytes, spec: TrainSpec, key: tuple) -> None:
    if len(blob) > spec.max_model_bytes:
        raise ModelTooLarge(
            f"the model of group {key_text(spec.group_cols, key)} is {len(blob)} bytes serialized, above "
            f"max_model_bytes={spec.max_model_bytes}: not kept. Fix: raise max_model_bytes (at most 2 GiB - 1 MiB), "
            "or fit a smaller model (e.g. fewer trees, a smaller max_depth or more min_samples_leaf).")


def all_finite(X, y: np.ndarray | None = None) -> bool:
    """No NaN or infinity among the features (a float matrix), no infinity among the labels (null labels are
    dropped per group).

    scikit-learn scans every input for them at every call; one vectorized scan of a whole packed batch
    lets the per-group calls skip it (``assume_finite``) when it would pass anyway. A batch with a NaN
    feature keeps the per-call checks, so estimators that accept NaN (and those that refuse it) behave as
    they always did. Used through ``batch_settings``.
    """
    if not isinstance(X, np.ndarray) or X.dtype.kind != "f" or not np.isfinite(X).all():
        return False
    return y is None or y.dtype.kind != "f" or not np.isinf(y).any()


@contextmanager
def batch_settings(X, y: np.ndarray | None = None, *, skip_parameter_validation: bool | None = None):
    """scikit-learn settings for the per-group calls of one packed batch (training's ``fit_packed``, scoring's
    ``routing.route_predict``): skip only checks known to pass (``all_finite``, ``_params_valid``; ``None``
    leaves that setting as it is) and answer its dataframe tests for numpy arrays at once (``fastchecks.py``)."""
    skip = {"assume_finite": all_finite(X, y), "skip_parameter_validation": skip_parameter_validation}
    with sklearn.config_context(**skip), numpy_fast_path():
        yield


def base_row(spec: TrainSpec, key: tuple, n_rows: int, seed: int, attempt: str | None) -> dict:
    row = dict(zip(spec.group_cols, key))
    row.update({name: None for name in FIXED_NAMES})
    row.update({name: float("nan") for name in METRIC_COLUMNS})
    row.update(n_rows=n_rows, n_rows_input=n_rows, n_train=0, n_holdout=0, fit_seconds=0.0, seed=seed,
               training_run_id=spec.training_run_id, model_format=spec.model_format,
               library_versions=model_bytes.library_versions(spec.model_format),
               task_attempt=attempt or "")
    return row


def _canonical_order(X: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Row order fixed by content (label, then features), or ``None`` when the rows are already in it.

    After a shuffle the rows of a group arrive in fetch order, which differs between runs; the
    holdout split and even floating-point sums depend on row order, so sorting makes the model
    bytes depend on the data alone.
    """
    if y.dtype.kind == "f":  # continuous labels rarely tie: then the label alone decides the order (3x cheaper)
        order = np.argsort(y, kind="stable")
        ranked = y[order]
        if not (ranked[1:] == ranked[:-1]).any():
            return None if np.all(order[1:] > order[:-1]) else order
    label = np.unique(y.astype(str), return_inverse=True)[1] if y.dtype == object else y
    order = np.lexsort([X[:, j] for j in range(X.shape[1] - 1, -1, -1)] + [label])
    return None if np.all(order[1:] > order[:-1]) else order


def _split(n: int, fraction: float, min_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    n_holdout = int(n * fraction)
    if n_holdout < 1 or n - n_holdout < min_rows:
        return np.arange(n), np.arange(0)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_holdout:]), np.sort(perm[:n_holdout])


def _metrics(task: str, model: object, X, y: np.ndarray, train: np.ndarray, holdout: np.ndarray) -> dict:
    """Train and holdout metrics; regression predicts every row once and splits the predictions."""
    out = {}
    if task == "classification":
        out.update(metric_row("train", classification_metrics(model, _rows(X, train), y[train])))
        if len(holdout):
            out.update(metric_row("holdout", classification_metrics(model, _rows(X, holdout), y[holdout])))
        return out
    pred = model.predict(X)
    out.update(metric_row("train", regression_metrics(y[train], pred[train])))
    if len(holdout):
        out.update(metric_row("holdout", regression_metrics(y[holdout], pred[holdout])))
    return out


def _rows(X, index: np.ndarray):
    return X.iloc[index] if isinstance(X, pd.DataFrame) else X[index]


def feature_matrix(pdf: pd.DataFrame, spec: TrainSpec) -> np.ndarray:
    return pdf.loc[:, list(spec.feature_cols)].to_numpy(dtype="float64", na_value=np.nan)


def fit_group(key: object, pdf: pd.DataFrame, *, spec: TrainSpec) -> dict:
    """Fit one group and return its model-table row (a dict keyed by column name)."""
    return fit_arrays(key, feature_matrix(pdf, spec), pdf[spec.label_col].to_numpy(), spec=spec)


def fit_arrays(key: object, X: np.ndarray, y: np.ndarray, *, spec: TrainSpec, attempt: str | None = None,
               n_input: int | None = None, params: dict | None = None) -> dict:
    """Fit one group given its feature matrix and labels (slices of a packed batch; no per-group DataFrame).

    The estimator sees a numpy array, or a DataFrame with the feature names when
    ``spec.pass_dataframe`` is set (for pipelines that select columns by name). ``params``: this group's own
    parameters, set over the spec's estimator (``group_params.py``); a value the estimator refuses fails the group.
    """
    key = key if isinstance(key, tuple) else (key,)
    seed = group_seed(spec.seed, key)
    row = base_row(spec, key, len(y), seed, attempt)
    if n_input is not None:
        row["n_rows_input"] = n_input
    usable = ~pd.isna(y)
    n_usable = int(usable.sum())
    if n_usable == 0:
        row.update(status=STATUS_SKIPPED, error=f"all {len(y)} labels in column '{spec.label_col}' are null in group "
                                                f"{key_text(spec.group_cols, key)}: not trained")
        return row
    if n_usable < spec.min_rows:
        row.update(status=STATUS_SKIPPED,
                   error=f"{n_usable} rows with a label, fewer than min_rows={spec.min_rows}, in group "
                         f"{key_text(spec.group_cols, key)}: not trained. Fix: add rows to the group or lower "
                         "min_rows (failure_policy='raise' refuses such input before training)")
        return row
    if n_usable < len(y):
        X, y = X[usable], y[usable]
    order = _canonical_order(X, y)
    if order is not None:
        X, y = X[order], y[order]
    if spec.pass_dataframe:
        X = pd.DataFrame(X, columns=list(spec.feature_cols))
    train, holdout = _split(len(y), spec.holdout_fraction, spec.min_rows, seed)
    try:
        start = time.perf_counter()
        template = EstimatorTemplate.of(spec.estimator)
        model = template.model(seed)
        if params:
            model.set_params(**params)
        seconds = spec.max_fit_seconds
        with _NO_LIMIT if seconds is None else fit_time_limit(seconds, key_text(spec.group_cols, key)):
            model.fit(_rows(X, train) if len(holdout) else X, y[train] if len(holdout) else y)
        row["fit_seconds"] = time.perf_counter() - start
        row.update(_metrics(task_of(spec), model, X, y, train, holdout))
        blob = model_bytes.dumps(model, spec.model_format, model_bytes.trusted_types(spec.trusted_types))
        check_model_size(blob, spec, key)
    except (Exception, FitTimeout) as exc:  # noqa: BLE001 - the policy decides what a failure does
        if isinstance(exc, FitTimeout):
            row["fit_seconds"] = time.perf_counter() - start  # how long it ran before it was stopped
        where = key_text(spec.group_cols, key)
        if spec.failure_policy == "raise":
            raise GroupFitError(f"Training failed for group {where}: {type(exc).__name__}: {exc}. "
                                "Use failure_policy='record' to record failures and train the other groups.") from exc
        tail = "".join(traceback.format_exception(exc)[-TRACEBACK_LINES:])
        row.update(status=STATUS_FAILED, error=f"{type(exc).__name__} in group {where}: {exc}\n{tail}")
        return row
    recorded = params_json(model) if params else template.params_json(model, seed)
    row.update(status=STATUS_OK, n_train=len(train), n_holdout=len(holdout), params=recorded,
               model=blob, model_sha256=model_bytes.sha256(blob))
    return row


def rows_to_frame(rows: list[dict], key_cols: tuple[str, ...]) -> pd.DataFrame:
    if not rows:
        return empty_model_table(key_cols)
    return pd.DataFrame.from_records(rows, columns=list(key_cols) + list(FIXED_NAMES))


def fit_packed(pdf: pd.DataFrame, *, spec: TrainSpec, attempt: str = "") -> pd.DataFrame:
    """Fit every group of ``pdf`` (groups contiguous, e.g. sorted by key) and return their rows. A
    ``GROUP_PARAMS_COL`` column gives each group's index into ``spec.group_params`` (-1: none)."""
    X, y = feature_matrix(pdf, spec), pdf[spec.label_col].to_numpy()
    sampled = dict(spec.sampled_from)
    codes = pdf[GROUP_PARAMS_COL].to_numpy() if GROUP_PARAMS_COL in pdf.columns else None
    sets = decoded(spec.group_params) if codes is not None else []
    # the parameters were validated once for the spec's estimator: not for the groups' own values
    skip = EstimatorTemplate.of(spec.estimator).params_valid if codes is None else None
    with batch_settings(X, y, skip_parameter_validation=skip):
        rows = [fit_arrays(key, X[s:e], y[s:e], spec=spec, attempt=attempt,
                           n_input=sampled.get(canonical_key(key)) if sampled else None,
                           params=sets[codes[s]] if codes is not None and codes[s] >= 0 else None)
                for key, s, e in group_bounds(pdf, spec.group_cols)]
    return rows_to_frame(rows, spec.group_cols)


def fit_stream(batches: Iterator[pd.DataFrame], *, spec: TrainSpec, attempt: str = "") -> Iterator[pd.DataFrame]:
    """``mapInPandas`` body: fit groups from sorted batches; a group may span several batches. ``attempt`` names
    the Spark task attempt (the Spark layer passes it in: the core never imports pyspark)."""
    for frame in complete_groups(batches, spec.group_cols):
        yield from by_model_bytes(fit_packed(frame, spec=spec, attempt=attempt))


OUTPUT_MODEL_BYTES = 1 << 30  # model bytes per returned frame: one Arrow binary array holds less than 2 GiB


def by_model_bytes(frame: pd.DataFrame, limit: int = OUTPUT_MODEL_BYTES) -> Iterator[pd.DataFrame]:
    """``frame`` in row slices whose model bytes stay under ``limit`` (each slice becomes one Arrow batch), so
    that several large models of one batch never overflow Spark's transfer of the rows."""
    sizes = frame["model"].map(lambda b: 0 if b is None else len(b)).to_numpy() if len(frame) else np.zeros(0)
    if sizes.sum() <= limit:
        yield frame
        return
    start, total = 0, 0
    for i, n in enumerate(sizes):
        if total + n > limit and i > start:
            yield frame.iloc[start:i]
            start, total = i, 0
        total += n
    yield frame.iloc[start:]
