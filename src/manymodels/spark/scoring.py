"""Batch scoring on Spark: per group with a training run's models, or with one model over a large table.

Models are loaded once per Python worker: ``model_cache.MODEL_CACHE`` (an importable module, keyed
by SHA-256, checked before deserializing; skops blobs also against the training run's trusted types)
holds them for the life of the worker process, up to a bound on their bytes (``model_cache_mb``; the
least recently used go first), and the per-group store's index and load policy are
read once per process too. No SparkContext, RDD or broadcast variable: the
per-group models are read by the workers from a packed Parquet store (``packed_store.PackedModels``) at a
path they can see, and a single model travels as bytes inside the UDF (its SHA-256 is the cache key).

Output columns: the key columns (per group), the pass-through columns, ``prediction``,
``probabilities`` (classifiers: per group a ``map<string,double>`` class -> probability, since the groups' models
may know different classes; with one model a struct with one double field per class, named by the class, so a
class is a plain column, ``probabilities.yes``), ``status`` / ``error`` (``ok`` with a null error;
``predict_failed`` when the model raised on that row: its prediction is null and the error names the group
and run, or the model version, and the exception, while the other rows still score; per group also
``unknown_group``, the group's training status, or ``refused`` when its stored model fails the checksum or
the trusted types; never a failed job) and ``model_version``.
A library-version mismatch between training and scoring warns (``RuntimeWarning``, in the worker's log).
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from manymodels.core import model_bytes, model_cache
from manymodels.core.estimators import is_classifier_estimator
from manymodels.core.model_bytes import ModelIntegrityError
from manymodels.core.routing import (
    PREDICT_FAILED,
    class_labels,
    predict_error,
    predict_isolated,
    route_predict,
    rows_of,
)
from manymodels.core.schema import quoted
from manymodels.errors import InputError, short_list
from manymodels.spark.session import cols, map_in_pandas, master_of
from manymodels.spark.training import ModelTable
from manymodels.spark.worker_process import freeze_imports, native_threads
from manymodels.storage import model_index
from manymodels.storage.model_index import ModelIndex
from manymodels.storage.model_table import iter_model_table
from manymodels.storage.packed_store import MODELS_FILE, PackedModels, load_index, read_blobs
from manymodels.storage.staging import MODELS_DIR, GroupModels, agrees, publish, staged_index, staging_root

SPARK_NUMERIC = {"double", "float", "bigint", "int", "smallint", "tinyint", "decimal", "boolean"}
MLFLOW_NUMERIC = {"double", "float", "long", "integer", "boolean"}


# ---------------------------------------------------------------- driver-side checks (pure)

def check_features(input_types: dict[str, str], expected: dict[str, str], asked=None, *, what: str) -> list[str]:
    """Feature columns to score with, checked against the model's: missing, extra or non-numeric is an
    ``InputError`` naming the columns. ``input_types`` are Spark simple types, ``expected`` MLflow types."""
    features = list(asked) if asked else list(expected)
    extra = [c for c in features if expected and c not in expected]
    if extra:
        raise InputError(f"Feature column(s) {short_list(extra)} are not inputs of {what}, whose signature expects "
                         f"{short_list(list(expected), 12)}. Drop them from feature_cols.")
    missing = [c for c in features if c not in input_types]
    if missing:
        raise InputError(f"The data to score lacks feature column(s) {short_list(missing)} that {what} needs: found "
                         f"{short_list(list(input_types), 12)}. Add them or rename the input's columns.")
    wrong = [f"{c} ({input_types[c]})" for c in features
             if input_types[c].split("(")[0] not in SPARK_NUMERIC and expected.get(c, "double") in MLFLOW_NUMERIC]
    if wrong:
        raise InputError(f"Feature column(s) {short_list(wrong)} are not numeric but {what} expects numbers. "
                         "Cast them (F.col(c).cast('double')) before scoring.")
    return features


def _check_present(input_types: dict, cols, role: str) -> None:
    missing = [c for c in cols if c not in input_types]
    if missing:
        raise InputError(f"{role} column(s) {short_list(missing)} not found in the data to score: found "
                         f"{short_list(list(input_types), 12)}. Add them or rename the input's columns.")


# ---------------------------------------------------------------- per-group: resolve the models (driver)

def resolve_group_models(spark, source, *, staging_dir: str | None = None) -> GroupModels:
    """``source``: a ``ModelTable`` (or an already resolved ``GroupModels``). Its store is staged under
    ``<staging_dir>/models`` (``staging_dir``: a folder every worker can read, default
    ``storage.staging.staging_root()``: on Databricks a Volume folder, never ``/dbfs/tmp`` nor the driver's
    working directory). Registered routers (``models:/name@alias``, a run id) are resolved by the MLflow layer
    (``tracking.registry.group_models``); ``manymodels.api.score_per_group`` takes either."""
    if isinstance(source, GroupModels):
        return source
    if isinstance(source, ModelTable):
        return _from_model_table(spark, source, staging_dir)
    raise InputError(f"model={source!r}: expected a ModelTable, 'models:/<name>@<alias>', "
                     "'models:/<name>/<version>' or an MLflow run id of a training run.")


def _from_model_table(spark, table, staging_dir: str | None) -> GroupModels:
    """A model table's store, packed once per content under ``<staging>/models/table-<digest>`` and checked against
    the index its training run captured when it wrote the table: an edited group is ``refused`` (``PackedModels``)."""
    keys = list(table.spec.group_cols)
    expected = table.expected_index(spark)
    digest = model_index.content_digest((k, *v) for k, v in expected.items())
    staging = staging_root(staging_dir, master=master_of(spark)) / MODELS_DIR
    folder = staging / f"table-{digest[:40]}"
    index = staged_index(folder)
    if index is None or not agrees(index.entries, expected):
        tmp = staging / f".table-{digest[:16]}.{uuid.uuid4().hex}"
        where = f"training run {table.training_run_id}"
        with PackedModels(tmp, policy=model_bytes.LoadPolicy.of(table.spec), expected=expected, strict=False,
                          where=where, meta={"training_run_id": table.training_run_id}) as packed:
            for batch in iter_model_table(spark, table, keys + ["status", "error", "model_sha256",
                                                                "library_versions", "model_format", "model"]):
                packed.add(batch, keys)
        publish(tmp, folder)
        index = staged_index(folder)
    return GroupModels(str(folder), tuple(keys), tuple(table.spec.feature_cols), table.extra.get("task", "regression"),
                       table.training_run_id, f"training run {table.training_run_id}",
                       pass_dataframe=table.spec.pass_dataframe, index_sha256=index.sha256)


# ---------------------------------------------------------------- per-group: the UDF (workers)

_INDEXES: dict[tuple, ModelIndex] = {}  # (store folder, index SHA-256) -> index, once per worker process


def _index(models: GroupModels) -> tuple[ModelIndex | None, str | None]:
    """The store's index, checked against ``models.index_sha256`` (read once per process), or why not."""
    key = (models.store, models.index_sha256)
    found = _INDEXES.get(key)
    if found is None:
        try:
            found = load_index(models.store, models.index_sha256 or None, what=models.version)
        except ModelIntegrityError as exc:  # every row of this batch is refused, naming its group
            return None, str(exc)
        _INDEXES[key] = found
    return found, None


def _log_loads(folder: str | None, seen: int) -> int:
    """Append the models this process loaded since ``seen`` to ``folder/<pid>.log`` (tests and benchmarks
    count loads per model per worker from these files); return the new count."""
    cache = model_cache.MODEL_CACHE
    if folder and cache.loads > seen:
        with open(Path(folder) / f"{os.getpid()}.log", "a") as fh:
            fh.writelines(f"{sha}\n" for sha in cache.loaded_since(seen))
    return cache.loads


def score_group_batches(batches: Iterator[pd.DataFrame], *, models: GroupModels, passthrough: tuple,
                        load_log: str | None = None, cache_bytes: int | None = None) -> Iterator[pd.DataFrame]:
    """``mapInPandas`` body: every row scored with its group's model, loaded at most once per process while
    the worker's models fit in ``cache_bytes`` (``model_cache.ModelCache``). A row its model cannot
    predict gets ``status="predict_failed"`` (``routing.route_predict``); the batch goes on."""
    store = Path(models.store) / MODELS_FILE
    index, refusal = _index(models)
    if cache_bytes is not None:
        model_cache.MODEL_CACHE.limit(cache_bytes)
    seen = model_cache.MODEL_CACHE.loads
    freeze_imports()  # the worker's modules and models: out of later garbage collections (worker_process.py)
    for batch in batches:
        if not len(batch):
            continue
        out = route_predict(batch, key_cols=models.key_cols, feature_cols=models.feature_cols,
                            index=index.entries if index else {}, load_blobs=partial(read_blobs, store),
                            run_label=models.run_label, pass_dataframe=models.pass_dataframe,
                            with_proba=models.task == "classification", policy=index.policy if index else None,
                            refuse_all=refusal)
        seen = _log_loads(load_log, seen)
        yield _finish(out, batch, passthrough, models.version, models.task)


def _finish(out: pd.DataFrame, batch: pd.DataFrame, passthrough, version: str, task: str) -> pd.DataFrame:
    for c in passthrough:
        out[c] = batch[c].to_numpy()
    if task == "classification":
        out["prediction"] = class_labels(out["prediction"])
    out["model_version"] = version
    return out


def score_per_group(df, model, *, passthrough_cols=(), staging_dir: str | None = None, load_log: str | None = None,
                    shuffle: bool = True, model_cache_mb: float | None = None):
    """Score ``df`` per group with the models of a training run (see ``resolve_group_models`` for ``model``).

    The key and feature columns are the training run's; they are checked on the driver before the job.
    Returns a lazy Spark DataFrame (see the module docstring for its columns); rows of groups without a
    model get ``status`` and ``error`` naming the group and the reason.

    ``shuffle=True`` (default) hash-partitions the rows by group first, so each group is scored in one
    task: one ``predict`` call per group and batch instead of one per group per input partition, and each
    worker loads only its share of the models. ``shuffle=False`` skips that exchange for input already
    clustered by group (for example one file or partition per group): rows are only sorted within their
    partitions, and a group spread over many partitions is then predicted (and its model loaded) in each.

    ``model_cache_mb`` bounds the models each Python worker keeps loaded (serialized megabytes; default
    ``$MANYMODELS_MODEL_CACHE_MB`` on the driver, else 1024): past it the least recently used are dropped
    and loaded again if a later batch needs them, instead of a long-lived worker growing without limit.
    """
    bound = model_cache.cache_bytes(model_cache_mb)
    models = resolve_group_models(df.sparkSession, model, staging_dir=staging_dir)
    types = dict(df.dtypes)
    _check_present(types, models.key_cols, "Group key")
    check_features(types, models.feature_types or {c: "double" for c in models.feature_cols}, models.feature_cols,
                   what=f"the models of {models.run_label}")
    passthrough = tuple(c for c in passthrough_cols if c not in models.key_cols)
    _check_present(types, passthrough, "Pass-through")
    check_output_names(models.key_cols, passthrough, models.task, per_group=True)
    used = list(dict.fromkeys([*models.key_cols, *models.feature_cols, *passthrough]))
    schema = _output_ddl(df, models.key_cols, passthrough, models.task, per_group=True)
    body = partial(score_group_batches, models=models, passthrough=passthrough, load_log=load_log, cache_bytes=bound)
    rows = df.select(*cols(used))
    if shuffle:  # the session's shuffle partitions (adaptive execution may merge)
        rows = rows.repartition(*cols(models.key_cols))
    return map_in_pandas(rows.sortWithinPartitions(*cols(models.key_cols)), body, schema)


def _output_ddl(df, key_cols, passthrough, task: str, *, per_group: bool, version: bool = True,
                classes: tuple = ()) -> str:
    """The output schema; per group, classifiers get a probabilities map, with one model a struct of ``classes``."""
    types = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    out = [f"{quoted(c)} {types[c]}" for c in [*key_cols, *passthrough]]
    out.append("`prediction` string" if task == "classification" else "`prediction` double")
    if task == "classification" and per_group:
        out.append("`probabilities` map<string,double>")
    elif classes:
        out.append(f"`probabilities` struct<{', '.join(f'{quoted(c)}: double' for c in classes)}>")
    out += ["`status` string", "`error` string"]
    if version:
        out.append("`model_version` string")
    return ", ".join(out)


def check_output_names(key_cols, passthrough, task: str, *, per_group: bool) -> None:
    """The columns scoring adds must not share a name with a key or pass-through column (Spark matches names
    without case): refused on the driver, never overwritten."""
    added = ["prediction", "status", "error", "model_version"]
    added += ["probabilities"] if task == "classification" or not per_group else []
    taken = {n.lower() for n in added}
    clash = [c for c in (*key_cols, *passthrough) if c.lower() in taken]
    if clash:
        raise InputError(f"Pass-through or key column(s) {short_list(clash)} have the name of a column scoring adds "
                         f"({short_list(added)}; names match without case): the output cannot hold both. Fix: "
                         f"rename them before scoring, e.g. df.withColumnRenamed({clash[0]!r}, "
                         f"{'input_' + clash[0]!r}), or leave them out of passthrough_cols.")
    seen: dict[str, str] = {}
    for c in (*key_cols, *passthrough):
        if c.lower() in seen and seen[c.lower()] != c:
            raise InputError(f"Output columns {seen[c.lower()]!r} and {c!r} differ only in case: Spark matches names "
                             "without case, so the scores could not hold both. Fix: rename one, or leave it out of "
                             "passthrough_cols.")
        seen[c.lower()] = c


# ---------------------------------------------------------------- one model over a large table

@dataclass(frozen=True)
class SingleModel:
    blob: bytes
    sha256: str
    feature_cols: tuple[str, ...]
    task: str
    version: str
    feature_types: dict = field(default_factory=dict)
    classes: tuple[str, ...] = ()  # the model's classes (as text) when it gives probabilities


def resolve_single_model(model, feature_cols=None, *, version: str | None = None,
                         types: dict | None = None) -> SingleModel:
    """A fitted scikit-learn estimator (a fold ensemble too) as checked bytes. ``version`` and ``types`` (feature
    name -> MLflow type) come with a model loaded from MLflow (``tracking.load_for_scoring``)."""
    obj, types = model, types or {}
    if not hasattr(model, "predict"):
        raise InputError(f"model must be a fitted estimator with predict() or an MLflow model URI, found "
                         f"{type(model).__name__}.")
    names = list(types) or [str(c) for c in getattr(obj, "feature_names_in_", [])]
    if not names and not feature_cols:
        raise InputError(f"The {type(obj).__name__} model does not record its feature names: pass feature_cols "
                         "in the order it was trained with.")
    blob = _dumps(obj)
    sha = model_bytes.sha256(blob)
    features = tuple(feature_cols or names)
    probabilistic = hasattr(obj, "classes_") and hasattr(obj, "predict_proba")
    task = "classification" if probabilistic or is_classifier_estimator(obj) else "regression"
    classes = tuple(str(c) for c in obj.classes_) if probabilistic else ()
    if len(set(classes)) < len(classes):
        raise InputError(f"The classes of model {version or type(obj).__name__} are not distinct as text "
                         f"({short_list(list(classes), 12)}): probabilities are named by class. Use distinct labels.")
    return SingleModel(blob, sha, features, task, version or f"sha256:{sha[:12]}",
                       types or {c: "double" for c in names}, classes)


def _dumps(obj) -> bytes:
    """The C pickler for estimators; cloudpickle for MLflow pyfunc wrappers that plain pickle refuses."""
    try:
        return model_bytes.dumps(obj)
    except Exception:  # noqa: BLE001
        import cloudpickle

        return cloudpickle.dumps(obj)


SCORE_BATCH_ROWS = 50_000  # rows per predict call at most (Spark hands over 10,000-row Arrow batches by default)
SCORE_BATCH_BYTES = 8 << 20  # and at most this many bytes of float64 features, for wide inputs


def coalesced(batches: Iterator, n_features: int) -> Iterator[list]:
    """Consecutive non-empty Arrow batches, grouped until a group holds ``SCORE_BATCH_ROWS`` rows or
    ``SCORE_BATCH_BYTES`` of float64 features: one ``predict`` call per group instead of one per Spark batch.
    Every call pays a fixed cost (a 100-tree ensemble pays it once per tree), so fewer, larger calls
    take less CPU; the rows and their order are unchanged."""
    target = max(1, min(SCORE_BATCH_ROWS, SCORE_BATCH_BYTES // (8 * max(1, n_features))))
    group, rows = [], 0
    for batch in batches:
        if not batch.num_rows:
            continue
        group.append(batch)
        rows += batch.num_rows
        if rows >= target:
            yield group
            group, rows = [], 0
    if group:
        yield group


def score_single_batches(batches: Iterator, *, model: SingleModel, passthrough: tuple,
                         threads: int = 1) -> Iterator:
    """``mapInArrow`` body: one model, unpickled at most once per worker process (keyed by its SHA-256).

    Arrow in, Arrow out: float64 features go to the model as one matrix without a pandas round trip, the
    pass-through columns are handed back as they came, and the probabilities are a struct of one float64
    column per class (cheaper to hand over and store than a map, whose class names repeat on every row).
    Consecutive batches are scored together (``coalesced``), one ``predict`` call each; when it raises, the rows
    are bisected (``routing.predict_isolated``): the failing ones get null ``prediction`` / ``probabilities``,
    ``status="predict_failed"`` and the exception in ``error``, the others their prediction and ``status="ok"``.
    The constant ``model_version`` column is added by Spark (``score_single``), not here."""
    import pyarrow as pa

    est = model_cache.MODEL_CACHE.get(model.blob, model.sha256, where=f"model {model.version}")
    freeze_imports()  # after the load, which imports the model's modules (worker_process.py)
    features = list(model.feature_cols)
    is_sklearn = hasattr(est, "fit")  # MLflow pyfunc wrappers want a DataFrame
    named = getattr(est, "feature_names_in_", None) is not None
    classes = pa.array(model.classes, type=pa.string())
    with native_threads(threads):  # one task per core: native thread pools would oversubscribe them
        for group in coalesced(batches, len(features)):
            table = pa.Table.from_batches(group)
            X = _features(table, features, as_frame=named or not is_sklearn)
            out = {c: table.column(c).combine_chunks() for c in passthrough}
            n = table.num_rows
            parts = predict_isolated(partial(_predict_arrow, est, X, model=model, classes=classes), n)
            if len(parts) == 1 and parts[0][3] is None:  # the usual case: constant columns, no per-row work
                out.update(parts[0][2], status=pa.repeat("ok", n), error=pa.nulls(n, pa.string()))
            else:
                out.update(_isolated_columns(parts, model))
            yield pa.RecordBatch.from_arrays(list(out.values()), names=list(out))


def _predict_arrow(est, X, start: int, stop: int, *, model: SingleModel, classes) -> dict:
    """``prediction`` (and ``probabilities``) of rows ``start:stop`` of ``X`` as Arrow arrays."""
    import pyarrow as pa

    X, n = rows_of(X, start, stop), stop - start
    if model.classes:
        proba = np.asarray(est.predict_proba(X), dtype="float64")
        return {"prediction": classes.take(pa.array(proba.argmax(axis=1).astype(np.int32))),
                "probabilities": pa.StructArray.from_arrays(
                    [pa.array(proba[:, j], type=pa.float64()) for j in range(len(model.classes))],
                    names=list(model.classes))}
    pred = np.asarray(est.predict(X))
    pred = pred.reshape(n) if pred.ndim == 2 and pred.shape[1] == 1 else pred
    if len(pred) != n:  # would misalign the rows
        raise ValueError(f"predict returned {len(pred)} values for {n} rows")
    return {"prediction": _strings(pred) if model.task == "classification"
            else pa.array(pred.astype("float64"), type=pa.float64())}


def _isolated_columns(parts: list[tuple], model: SingleModel) -> dict:
    """The output columns of a batch whose ``predict`` raised, from ``predict_isolated``'s ranges: nulls,
    ``predict_failed`` and the error where a range failed."""
    import pyarrow as pa

    types = {"prediction": pa.string() if model.task == "classification" else pa.float64()}
    if model.classes:
        types["probabilities"] = pa.struct([(c, pa.float64()) for c in model.classes])
    columns = {name: [] for name in [*types, "status", "error"]}
    for start, stop, result, exc in sorted(parts, key=lambda part: part[0]):
        n = stop - start
        for name, kind in types.items():
            columns[name].append(result[name] if exc is None else pa.nulls(n, kind))
        columns["status"].append(pa.repeat("ok" if exc is None else PREDICT_FAILED, n))
        columns["error"].append(pa.nulls(n, pa.string()) if exc is None else
                                pa.repeat(predict_error(f"model {model.version}", exc, n), n))
    return {name: pa.concat_arrays(arrays) for name, arrays in columns.items()}


def _features(table, features: list[str], *, as_frame: bool):
    """The feature columns of an Arrow table: one float64 matrix (nulls as NaN), filled chunk by chunk in a single
    copy, when every column is float64; otherwise (or for models that want names) a pandas frame with the
    original dtypes."""
    import pyarrow as pa

    cols = [table.column(c) for c in features]
    if all(c.type == pa.float64() for c in cols):
        X = np.empty((table.num_rows, len(cols)), dtype="float64")
        for j, col in enumerate(cols):
            start = 0
            for chunk in col.chunks:
                X[start:start + len(chunk), j] = chunk.to_numpy(zero_copy_only=False)
                start += len(chunk)
        return pd.DataFrame(X, columns=features, copy=False) if as_frame else X
    frame = table.select(features).to_pandas()
    return frame if as_frame else frame.to_numpy(dtype="float64", na_value=np.nan)


def _strings(values: np.ndarray):
    import pyarrow as pa

    return pa.array(values.astype(str).astype(object), type=pa.string())


def score_single(df, model, *, feature_cols=None, passthrough_cols=(), threads_per_task: int = 1):
    """Score every row of ``df`` with one model (an estimator object or an MLflow model URI).

    Features are checked against the model's signature (or ``feature_names_in_``) on the driver. Returns a lazy
    Spark DataFrame: the pass-through columns, ``prediction``, ``probabilities`` for a classifier with
    ``predict_proba`` (a struct of one double per class, named by the class: ``probabilities.yes``), ``status``
    (``ok``, or ``predict_failed`` for a row the model raised on: null prediction and probabilities), ``error``
    (null, or the model version and the exception) and ``model_version``. A failing row never fails the job.
    """
    from pyspark.sql import functions as F

    resolved = model if isinstance(model, SingleModel) else resolve_single_model(model, feature_cols)
    types = dict(df.dtypes)
    check_features(types, resolved.feature_types, feature_cols or resolved.feature_cols,
                   what=f"model {resolved.version}")
    passthrough = tuple(passthrough_cols)
    _check_present(types, passthrough, "Pass-through")
    check_output_names((), passthrough, resolved.task, per_group=False)
    used = list(dict.fromkeys([*resolved.feature_cols, *passthrough]))
    schema = _output_ddl(df, (), passthrough, resolved.task, per_group=False, version=False, classes=resolved.classes)
    body = partial(score_single_batches, model=resolved, passthrough=passthrough, threads=threads_per_task)
    scored = map_in_pandas(df.select(*cols(used)), body, schema, arrow=True)
    return scored.withColumn("model_version", F.lit(resolved.version))
