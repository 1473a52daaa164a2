"""Logging a training run, from the driver only: the parent run, per-group artifacts, metrics, the router registered.

Everything a training run logs is keyed by its ``training_run_id``: the MLflow run is found by tag
and reused, group models go to deterministic paths (``models/<key path>.pkl``), and a
registered version already made for the training run is reused. Logging the same training run
again therefore replaces files instead of adding runs, artifacts or versions. The number of
tracking calls per training run does not depend on the number of groups (artifact upload aside).
"""
from __future__ import annotations

import json
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from manymodels.core import model_bytes
from manymodels.core.keys import key_path
from manymodels.core.schema import METRIC_COLUMNS, STATUS_FAILED, STATUS_OK, STATUS_SKIPPED
from manymodels.spark.training import check_rerun
from manymodels.storage import model_index, model_table
from manymodels.storage.model_table import iter_model_table
from manymodels.storage.packed_store import PackedModels
from manymodels.tracking import report
from manymodels.tracking.context import (
    FINGERPRINT_TAG,
    FORMAT_TAG,
    INDEX_TAG,
    RUN_TAG,
    TrackingContext,
    find_run,
    model_name,
    run_of,
)
from manymodels.tracking.registry import existing_version, logged_model_id, model_file
from manymodels.tracking.router_pyfunc import GroupRouter, param_schema

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # logged with each model (code_paths): the package itself
SPARK_TO_MLFLOW = {"bigint": "long", "int": "integer", "smallint": "integer", "tinyint": "integer",
                   "double": "double", "float": "float", "string": "string", "boolean": "boolean",
                   "date": "datetime", "timestamp": "datetime", "timestamp_ntz": "datetime", "binary": "binary"}


def mlflow_type(spark_type: str) -> str:
    """The MLflow signature type of a Spark column type (decimals as double: ``keys.canonical_key`` gives a decimal
    and the double of the same value one text, so a router still finds the group)."""
    return SPARK_TO_MLFLOW.get(spark_type, "double")


@dataclass(frozen=True)
class LoggedTraining:
    run_id: str
    model_name: str
    version: str
    alias: str
    model_uri: str  # models:/<name>@<alias>
    reused: bool
    alias_version: str = ""  # where the alias points now: this version, or a concurrent run's that committed later


def _params(table) -> dict[str, str]:
    spec = table.spec
    params = {"group_cols": ",".join(spec.group_cols), "feature_cols": ",".join(spec.feature_cols),
              "label_col": spec.label_col, "estimator": type(spec.estimator).__name__,
              "task": spec.task or "auto", "seed": spec.seed, "min_rows": spec.min_rows,
              "holdout_fraction": spec.holdout_fraction, "failure_policy": spec.failure_policy}
    for k, v in spec.estimator.get_params(deep=False).items():
        params[f"estimator.{k}"] = v if isinstance(v, (int, float, str, bool, type(None))) else type(v).__name__
    return {k: str(v)[:500] for k, v in params.items()}


def _stream_models(spark, table, out: Path) -> tuple[pd.DataFrame, "PackedModels"]:
    """Write every ok group's model to ``out/models/<key path>.pkl`` and the router's packed store and index
    (``out/router``), every model checked against what the training run wrote (``ModelTable.expected_index``);
    return the per-group metrics (no blobs) and the store's writer (its index SHA-256)."""
    keys = list(table.spec.group_cols)
    cols = keys + ["status", "error", "n_rows", "fit_seconds", *METRIC_COLUMNS, "model", "model_sha256",
                   "library_versions", "task_attempt", "data_fingerprint", "carried_from", "model_format"]
    frames = []
    made_dirs: set[Path] = set()
    suffix = model_bytes.extension(table.spec.model_format)  # pkl or skops
    spec = table.spec
    meta = {"key_cols": list(spec.group_cols), "feature_cols": list(spec.feature_cols),
            "task": table.extra.get("task", "regression"), "training_run_id": table.training_run_id,
            "pass_dataframe": bool(spec.pass_dataframe)}
    with PackedModels(out / "router", policy=model_bytes.LoadPolicy.of(spec), expected=table.expected_index(spark),
                      meta=meta, where=f"training run {table.training_run_id}") as packed:
        for batch in iter_model_table(spark, table, cols):
            paths = []
            for values, status, blob in zip(batch[keys].itertuples(index=False, name=None), batch["status"],
                                            batch["model"]):
                rel = f"models/{key_path(table.spec.group_cols, values)}.{suffix}" if status == STATUS_OK else None
                if rel:
                    path = out / rel
                    if path.parent not in made_dirs:
                        path.parent.mkdir(parents=True, exist_ok=True)
                        made_dirs.add(path.parent)
                    path.write_bytes(blob)
                paths.append(rel)
            packed.add(batch, keys)
            frames.append(batch.drop(columns=["model"]).assign(artifact_path=paths))
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)), packed


def summary_metrics(metrics: pd.DataFrame) -> dict[str, float]:
    out = {f"groups_{s}": float((metrics["status"] == s).sum()) if len(metrics) else 0.0
           for s in (STATUS_OK, STATUS_FAILED, STATUS_SKIPPED)}
    ok = metrics[metrics["status"] == STATUS_OK] if len(metrics) else metrics
    for col in METRIC_COLUMNS:
        if col in ok and ok[col].notna().any():
            for q in (0.1, 0.5, 0.9):
                out[f"{col}_p{int(q * 100)}"] = float(ok[col].quantile(q))
    if len(ok):
        out["fit_seconds_total"] = float(ok["fit_seconds"].sum())
    return out


def _histogram(metrics: pd.DataFrame, path: Path) -> Path | None:
    ok = metrics[metrics["status"] == STATUS_OK] if len(metrics) else metrics
    column = next((c for c in ("holdout_r2", "train_r2", "holdout_accuracy", "train_accuracy")
                   if c in ok and ok[c].notna().any()), None)
    if column is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = ok[column].to_numpy(dtype="float64")
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    lo, hi = float(values.min()), float(values.max())
    pad = max(abs(lo), abs(hi), 1.0) * 1e-6  # one value (or a few equal ones) far from 0: 40 bins need a width
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(values, bins=40, range=(lo - pad, hi + pad) if hi - lo < pad else None)
    ax.set_xlabel(column)
    ax.set_ylabel("groups")
    ax.set_title(f"{column} over {int(ok[column].notna().sum())} group models")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _signature(table):
    """Inputs: the key and feature columns with the input's types; outputs: prediction, status, error; params (a
    classification router): ``predict_proba`` (``router_pyfunc.param_schema``), which adds ``probability_<class>``
    columns to the outputs (one per class any group's model knows, so they are not in the output schema)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    types = table.extra.get("input_types", {})
    cols = list(dict.fromkeys([*table.spec.group_cols, *table.spec.feature_cols]))
    inputs = Schema([ColSpec(mlflow_type(types.get(c, "double")), c) for c in cols])
    task = table.extra.get("task", "regression")
    outputs = Schema([ColSpec("double" if task == "regression" else "string", "prediction"),
                      ColSpec("string", "status"), ColSpec("string", "error")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=param_schema(task))


EXAMPLE_ROWS = 3
# Feature values of the input example when no training rows are given (log_training reads no input): typed
# placeholders, so the example matches the signature; its keys are real ok groups, so serving it routes to real models.
PLACEHOLDERS = {"double": ("float64", 0.0), "float": ("float32", 0.0), "long": ("int64", 0), "integer": ("int32", 0),
                "boolean": ("bool", False), "string": ("object", ""), "binary": ("object", b""),
                "datetime": ("datetime64[ns]", pd.Timestamp(0))}


def _input_example(table, metrics: pd.DataFrame, rows: pd.DataFrame | None = None, signature=None):
    """A few rows of the router's input (``rows``' key and feature columns, else the first ok groups' keys with
    placeholder features), as ``(rows, params)`` for a classification router; None when there is no ok group, MLflow
    cannot turn the rows into a serving request, or the rows do not pass ``signature`` as MLflow enforces it (an
    unusual key: a date outside pandas' nanosecond range, found by the property tests): the model is then
    logged without an example, never refused for it."""
    from mlflow.models import convert_input_example_to_serving_input

    keys, features = list(table.spec.group_cols), list(table.spec.feature_cols)
    cols = list(dict.fromkeys([*keys, *features]))
    if rows is not None:
        frame = rows.loc[:, cols].head(EXAMPLE_ROWS).reset_index(drop=True)
    else:
        frame = metrics.loc[metrics["status"] == STATUS_OK, keys].head(EXAMPLE_ROWS).reset_index(drop=True)
        types = table.extra.get("input_types", {})
        for c in features:
            if c not in frame:
                dtype, value = PLACEHOLDERS.get(mlflow_type(types.get(c, "double")), PLACEHOLDERS["double"])
                frame[c] = pd.Series([value] * len(frame), dtype=dtype)
    if not len(frame):
        return None
    params = param_schema(table.extra.get("task", "regression"))
    example = (frame, {p.name: p.default for p in params.params}) if params else frame
    try:
        convert_input_example_to_serving_input(example)
        if signature is not None:  # what log_model checks the example with (private to MLflow: a missing name is
            from mlflow.pyfunc import _validate_prediction_input  # caught below, and the example is left out)

            _validate_prediction_input(frame.copy(), example[1] if params else None, signature.inputs,
                                       signature.params)
    except Exception:  # noqa: BLE001 - MLflow cannot serialize or enforce it; the signature still describes the input
        return None
    return example


def _requirements() -> list[str]:
    versions = json.loads(model_bytes.library_versions())
    import mlflow
    import pyarrow

    return [f"mlflow=={mlflow.__version__}", f"scikit-learn=={versions['scikit-learn']}",
            f"numpy=={versions['numpy']}", f"pandas=={versions['pandas']}", f"joblib=={versions['joblib']}",
            f"pyarrow=={pyarrow.__version__}"]


def log_training(spark, table, ctx: TrackingContext, *, name: str | None = None, alias: str = "champion",
                 extra_params: dict | None = None, tables: dict[str, pd.DataFrame] | None = None,
                 source: str | None = None, input_rows: pd.DataFrame | None = None) -> LoggedTraining:
    """Log a written model table as one MLflow run and register its router (once per training run).
    ``tables``: extra result tables (e.g. a search's cv results) logged as Parquet and CSV artifacts. ``source``:
    the training input (a table name or path; default ``extra_params["source"]``), recorded with ``mlflow.log_input``
    (with its Delta version when it is a Delta table) and in the version's description. ``input_rows``: a few rows of
    the input (key and feature columns) for the model's input example; default the first ok groups' keys with
    placeholder features.

    What a person browsing sees (``report``): the version's description (groups, metric quantiles, estimator and
    parameters, data, runs; the promotion gate's section is kept), the summary metrics on the logged model (logged
    after ``log_model`` with its ``model_id``), a worst-groups table and two figures on the run.

    A training run id names one set of models: logging it again with the same run fingerprint (the same groups,
    data and settings: a rerun after a crash) reuses its run and registered version; with another fingerprint it
    raises ``training.TrainingRunConflict`` before anything is logged. Every model is checked against what the
    training run wrote (``packed_store.PackedModels``). The model table becomes its location's current table after the
    version is registered and before the alias moves, and the alias then follows the location's current table
    (``_settle_alias``): two runs on one location end with the table and the alias on the same run."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    name = model_name(name)
    source = source or (extra_params or {}).get("source")
    previous = run_of(ctx, table.training_run_id)  # the anchor: versions are found by its MLflow run id
    existing = existing_version(client, name, table.training_run_id, previous.info.run_id if previous else None)
    with tempfile.TemporaryDirectory(prefix="manymodels-") as tmp:
        out = Path(tmp)
        metrics, packed = _stream_models(spark, table, out)  # checked before anything is logged
        fingerprint = table.fingerprint or packed.digest[:32]
        if existing is not None:
            check_rerun(table.training_run_id, fingerprint, (existing.tags or {}).get(FINGERPRINT_TAG, "unrecorded"),
                        f" as {name} version {existing.version}")
        elif previous is not None and FINGERPRINT_TAG in previous.data.tags:  # an attempt that crashed before it
            check_rerun(table.training_run_id, fingerprint, previous.data.tags[FINGERPRINT_TAG],  # registered
                        f" (MLflow run {previous.info.run_id}, not registered)")
        run_id = previous.info.run_id if previous else None
        with mlflow.start_run(run_id=run_id, experiment_id=ctx.experiment_id,
                              run_name=None if run_id else table.training_run_id) as run:
            mlflow.set_tags({RUN_TAG: table.training_run_id, "manymodels.model_table": table.version,
                             "manymodels.model_table_location": table.location, FINGERPRINT_TAG: fingerprint})
            retrain = table.extra.get("retrain") or {}
            params = {**_params(table), "retrain": retrain.get("mode", "all"),
                      **{k: str(v) for k, v in (extra_params or {}).items()}}
            mlflow.log_params(params)
            dataset, source_version = _log_input(spark, table, source, fingerprint, metrics)
            summary = {**summary_metrics(metrics), **{f"groups_{k}": float(retrain[k])
                                                      for k in ("trained", "carried", "dropped") if k in retrain}}
            if (out / "models").exists():
                mlflow.log_artifacts(str(out / "models"), "models")
            metrics.to_parquet(out / "group_metrics.parquet", index=False)
            metrics.to_csv(out / "group_metrics.csv", index=False)
            mlflow.log_artifact(str(out / "group_metrics.parquet"))
            mlflow.log_artifact(str(out / "group_metrics.csv"))
            for table_name, frame in (tables or {}).items():
                for suffix in ("parquet", "csv"):
                    getattr(frame, f"to_{suffix}")(out / f"{table_name}.{suffix}", index=False)
                    mlflow.log_artifact(str(out / f"{table_name}.{suffix}"))
            hist = _histogram(metrics, out / "metric_histogram.png")
            if hist:
                mlflow.log_artifact(str(hist))
            try:  # what a person browses; never a reason to leave the models unregistered
                report.log_report(metrics, table.spec.group_cols, run_id=run.info.run_id, rerun=previous is not None)
            except Exception as exc:  # noqa: BLE001
                warnings.warn(f"The worst-groups table and figures of training run {table.training_run_id} were not "
                              f"logged: {type(exc).__name__}: {str(exc)[:300]}", stacklevel=2)

            # The router is logged as a pickled PythonModel instance, not as models-from-code: its state is five
            # small attributes (columns, run id, task) and everything it serves is in the packed store artifacts;
            # cloudpickle pickles the class by reference (manymodels.tracking.router_pyfunc, shipped in code_paths),
            # so the pickle holds no code and loads wherever the package in code_paths does. Models-from-code would
            # move those attributes into model_config and a script file for no gain, and routers already
            # registered (read back by registry._legacy_router_models) are pickled instances.
            signature = _signature(table)

            def log():
                path = list(sys.path)  # MLflow serves the input example in-process, loading the model: it puts the
                try:  # model's code folder (a temporary copy of this package) first on sys.path, for good
                    return mlflow.pyfunc.log_model(
                        name="router",
                        python_model=GroupRouter(table.spec.group_cols, table.spec.feature_cols,
                                                 table.training_run_id, table.spec.pass_dataframe,
                                                 table.extra.get("task")),
                        artifacts={"group_models": str(out / "router")}, signature=signature,
                        input_example=_input_example(table, metrics, input_rows, signature), params=params,
                        pip_requirements=_requirements(), code_paths=[str(PACKAGE_DIR)])
                finally:
                    sys.path[:] = path

            def linked(model_id: str | None) -> None:
                # after log_model, with its id: the logged model (and the registry's version page) shows them
                mlflow.log_metrics(summary, model_id=model_id, dataset=dataset)

            def commit(version: str) -> str:
                _describe(client, name, version, existing, report.training_description(
                    training_run_id=table.training_run_id, run_id=run.info.run_id, metrics=metrics,
                    estimator=table.spec.estimator, spec_lines=_setting_lines(table), source=source,
                    source_version=source_version, fingerprint=fingerprint, model_table=str(table.version)))
                # The model table becomes current only now, after the version exists and before the alias moves:
                # a run killed earlier leaves the previous table and alias as they were; a rerun reuses this run.
                table.commit(spark, registered=f"{name}/{version}")
                return _settle_alias(client, spark, table, name, alias, version)

            version, reused, alias_version = _register_once(
                client, name, table.training_run_id, log, existing=existing, commit=commit, logged=linked,
                tags={FINGERPRINT_TAG: fingerprint, INDEX_TAG: packed.index_sha256}, alias=alias)
    return LoggedTraining(run.info.run_id, name, version, alias, f"models:/{name}@{alias}", reused, alias_version)


def _log_input(spark, table, source: str | None, fingerprint: str, metrics: pd.DataFrame):
    """Record the training input with ``mlflow.log_input`` (``report.input_dataset``: no data read); return
    ``(dataset, its Delta version)``, ``(None, None)`` when the source is unknown or cannot be described (a
    warning: describing the input never fails the logging of the models)."""
    import mlflow

    if not source:
        return None, None
    try:
        dataset, version = report.input_dataset(spark, source, fingerprint=fingerprint,
                                                schema=_signature(table).inputs)
        rows = int(pd.to_numeric(metrics["n_rows"], errors="coerce").fillna(0).sum()) if len(metrics) else 0
        mlflow.log_input(dataset, context="training", tags={"groups": str(len(metrics)), "rows": str(rows)})
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"The training input {source!r} was not recorded with mlflow.log_input: "
                      f"{type(exc).__name__}: {str(exc)[:300]}", stacklevel=3)
        return None, None
    return dataset, version


def _setting_lines(table) -> list[str]:
    spec = table.spec
    retrain = (table.extra.get("retrain") or {}).get("mode", "all")
    return [f"- settings: task {table.extra.get('task') or spec.task or 'auto'}, seed {spec.seed}, min_rows "
            f"{spec.min_rows}, holdout_fraction {spec.holdout_fraction}, failure_policy {spec.failure_policy}, "
            f"retrain {retrain}"]


def _describe(client, name: str, version: str, existing, training: str) -> None:
    """Write the training part of the version's description, keeping the promotion gate's section (a rerun of a
    version already gated); no call when the text is already there."""
    current = existing.description if existing is not None else None
    text = report.compose_description(current, training=training)
    if text != (current or ""):
        client.update_model_version(name, version, description=text)


def _settle_alias(client, spark, table, name: str, alias: str, version: str) -> str:
    """Point ``alias`` at the registered version of the location's current table; return that version.

    The pointer is the authority: each run commits it, then sets the alias to the version the pointer names
    (``registered``) and reads the pointer again, until it did not move in between. Whatever the interleaving of
    two runs on one location, the last alias write follows the last commit, so the table and the alias end on
    the same run (a run killed between its commit and its alias leaves that to a rerun)."""
    target = version
    for _ in range(20):
        try:
            pointer = model_table.current(table.location, spark)
        except model_table.ModelTableNotFound:
            pointer = {}
        registered_name, _, registered_version = (pointer.get("registered") or "").rpartition("/")
        mine = _same_version(pointer.get("version"), table.version)
        target = version if mine or registered_name != name or not registered_version else registered_version
        client.set_registered_model_alias(name, alias, target)
        try:
            again = model_table.current(table.location, spark)
        except model_table.ModelTableNotFound:
            again = {}
        if again.get("version") == pointer.get("version"):
            break
    return target


def _same_version(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    return a == b or ("/" in a and Path(a).resolve() == Path(b).resolve())


def _register_once(client, name: str, run_key: str, log_model, *, alias: str, existing=None, commit=None,
                   tags: dict | None = None, logged=None) -> tuple[str, bool, str]:
    """Register the model of ``run_key`` once (reusing ``existing``, the version already tagged with it, when
    given) and point ``alias`` at it; return ``(version, reused, the version the alias points at)``.

    Called inside the active run; ``log_model()`` logs the model and returns its ModelInfo; ``tags`` go on the new
    version, with the run key. ``commit(version)`` (if given) runs after the version exists and moves the alias
    itself, returning where it points. ``logged(model_id)`` (if given) runs right after the model is logged, before
    it is registered (with the reused version's logged model id when there is one).
    """
    import mlflow

    if existing is None:
        with warnings.catch_warnings():  # type-hint and cloudpickle advice does not apply to our classes
            warnings.simplefilter("ignore")
            info = log_model()
        if logged is not None:
            logged(info.model_id)
        extra = tags(info) if callable(tags) else (tags or {})
        version = str(mlflow.register_model(info.model_uri, name, tags={RUN_TAG: run_key, **extra}).version)
    else:
        version = str(existing.version)
        if logged is not None:
            logged(logged_model_id(existing))
    if commit is not None:
        alias_version = commit(version)
    else:
        client.set_registered_model_alias(name, alias, version)
        alias_version = version
    mlflow.set_tag("manymodels.registered_version", f"{name}/{version}")
    return version, existing is not None, alias_version


def log_estimator(model, ctx: TrackingContext, *, run_key: str, name: str, input_example: pd.DataFrame,
                  alias: str = "champion", params: dict | None = None, metrics: dict | None = None,
                  tables: dict[str, pd.DataFrame] | None = None, files: list[str | Path] | None = None,
                  tags: dict | None = None, serialization_format: str | None = None) -> LoggedTraining:
    """One fitted scikit-learn-style model (a fold ensemble, a search's best model) through the same path as
    the per-group router: one run found again by ``run_key``, params, metrics, result tables (Parquet and CSV),
    extra files (plots), the model logged with a signature and explicit requirements, registered once per
    ``run_key`` and aliased. Idempotent: logging the same ``run_key`` again reuses the run and the version."""
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    client = MlflowClient()
    name = model_name(name)
    run_id = find_run(ctx, run_key)
    with tempfile.TemporaryDirectory(prefix="manymodels-") as tmp, \
            mlflow.start_run(run_id=run_id, experiment_id=ctx.experiment_id,
                             run_name=None if run_id else run_key) as run:
        out = Path(tmp)
        mlflow.set_tags({RUN_TAG: run_key, **{k: str(v) for k, v in (tags or {}).items()}})
        if params:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        for table_name, frame in (tables or {}).items():
            frame.to_parquet(out / f"{table_name}.parquet", index=False)
            frame.to_csv(out / f"{table_name}.csv", index=False)
            mlflow.log_artifact(str(out / f"{table_name}.parquet"))
            mlflow.log_artifact(str(out / f"{table_name}.csv"))
        for f in files or []:
            mlflow.log_artifact(str(f))
        example = input_example.head(5)
        signature = infer_signature(example, model.predict(example))

        def log():
            return mlflow.sklearn.log_model(model, name="model", signature=signature, input_example=example,
                                            pip_requirements=_requirements(), serialization_format=serialization_format,
                                            code_paths=[str(PACKAGE_DIR)])

        def linked(model_id: str | None) -> None:  # after log_model: the logged model shows them
            if metrics:
                mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, model_id=model_id)

        existing = existing_version(client, name, run_key, run_id)
        version, reused, _ = _register_once(client, name, run_key, log, alias=alias, existing=existing,
                                            tags=_model_file_tags, logged=linked)
    return LoggedTraining(run.info.run_id, name, version, alias, f"models:/{name}@{alias}", reused, version)


def _model_file_tags(info) -> dict[str, str]:
    """A logged scikit-learn model's version tags: the SHA-256 of its serialized estimator and its format, which
    ``load_for_scoring`` checks before it deserializes anything."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="manymodels-") as tmp:
        path, fmt = model_file(Path(mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, dst_path=tmp)))
        return {INDEX_TAG: model_index.file_sha256(path), FORMAT_TAG: fmt}


# ---------------------------------------------------------------- scoring: registered models as the workers need them


