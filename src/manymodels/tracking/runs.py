"""Logging a training run, from the driver only: the parent run, per-group artifacts, metrics, the router registered.

Everything a training run logs is keyed by its ``training_run_id``: the MLflow run is found by tag
and reused, group models go to deterministic paths (``models/<key path>.pkl``), and a
registered version already made for the training run is reused. Logging the same training run
again therefore replaces files instead of adding runs, artifacts or versions. The number of
tracking calls per training run does not depend on the number of groups (artifact upload aside).
"""
from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from manymodels.core import model_bytes
from manymodels.core.keys import key_path
from manymodels.core.schema import METRIC_COLUMNS, STATUS_FAILED, STATUS_OK, STATUS_SKIPPED
from manymodels.spark.training import check_rerun
from manymodels.storage import model_index, model_table
from manymodels.storage.model_table import iter_model_table
from manymodels.storage.packed_store import PackedModels
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
from manymodels.tracking.registry import existing_version, is_registered, model_file
from manymodels.tracking.router_pyfunc import GroupRouter

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

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(ok[column].dropna().to_numpy(), bins=40)
    ax.set_xlabel(column)
    ax.set_ylabel("groups")
    ax.set_title(f"{column} over {int(ok[column].notna().sum())} group models")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _signature(table):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    types = table.extra.get("input_types", {})
    cols = list(table.spec.group_cols) + list(table.spec.feature_cols)
    inputs = Schema([ColSpec(mlflow_type(types.get(c, "double")), c) for c in cols])
    task = table.extra.get("task", "regression")
    outputs = Schema([ColSpec("double" if task == "regression" else "string", "prediction"),
                      ColSpec("string", "status"), ColSpec("string", "error")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def _requirements() -> list[str]:
    versions = json.loads(model_bytes.library_versions())
    import mlflow
    import pyarrow

    return [f"mlflow=={mlflow.__version__}", f"scikit-learn=={versions['scikit-learn']}",
            f"numpy=={versions['numpy']}", f"pandas=={versions['pandas']}", f"joblib=={versions['joblib']}",
            f"pyarrow=={pyarrow.__version__}"]


def log_training(spark, table, ctx: TrackingContext, *, name: str | None = None, alias: str = "champion",
                 extra_params: dict | None = None, tables: dict[str, pd.DataFrame] | None = None) -> LoggedTraining:
    """Log a written model table as one MLflow run and register its router (once per training run).
    ``tables``: extra result tables (e.g. a search's cv results) logged as Parquet and CSV artifacts.

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
    existing = existing_version(client, name, table.training_run_id) if is_registered(client, name) else None
    with tempfile.TemporaryDirectory(prefix="manymodels-") as tmp:
        out = Path(tmp)
        metrics, packed = _stream_models(spark, table, out)  # checked before anything is logged
        fingerprint = table.fingerprint or packed.digest[:32]
        previous = run_of(ctx, table.training_run_id)
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
            mlflow.log_params({**_params(table), "retrain": retrain.get("mode", "all"),
                               **{k: str(v) for k, v in (extra_params or {}).items()}})
            mlflow.log_metrics({**summary_metrics(metrics),
                                **{f"groups_{k}": float(retrain[k]) for k in ("trained", "carried", "dropped")
                                   if k in retrain}})
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

            def log():
                return mlflow.pyfunc.log_model(
                    name="router",
                    python_model=GroupRouter(table.spec.group_cols, table.spec.feature_cols, table.training_run_id,
                                             table.spec.pass_dataframe, table.extra.get("task")),
                    artifacts={"group_models": str(out / "router")}, signature=_signature(table),
                    pip_requirements=_requirements(), code_paths=[str(PACKAGE_DIR)])

            def commit(version: str) -> str:
                # The model table becomes current only now, after the version exists and before the alias moves:
                # a run killed earlier leaves the previous table and alias as they were; a rerun reuses this run.
                table.commit(spark, registered=f"{name}/{version}")
                return _settle_alias(client, spark, table, name, alias, version)

            version, reused, alias_version = _register_once(
                client, name, table.training_run_id, log, existing=existing, commit=commit,
                tags={FINGERPRINT_TAG: fingerprint, INDEX_TAG: packed.index_sha256}, alias=alias)
    return LoggedTraining(run.info.run_id, name, version, alias, f"models:/{name}@{alias}", reused, alias_version)


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
                   tags: dict | None = None) -> tuple[str, bool, str]:
    """Register the model of ``run_key`` once (reusing ``existing``, the version already tagged with it, when
    given) and point ``alias`` at it; return ``(version, reused, the version the alias points at)``.

    Called inside the active run; ``log_model()`` logs the model and returns its ModelInfo; ``tags`` go on the new
    version, with the run key. ``commit(version)`` (if given) runs after the version exists and moves the alias
    itself, returning where it points.
    """
    import mlflow

    if existing is None:
        with warnings.catch_warnings():  # type-hint and cloudpickle advice does not apply to our classes
            warnings.simplefilter("ignore")
            info = log_model()
        extra = tags(info) if callable(tags) else (tags or {})
        version = str(mlflow.register_model(info.model_uri, name, tags={RUN_TAG: run_key, **extra}).version)
    else:
        version = str(existing.version)
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
        if metrics:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
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

        existing = existing_version(client, name, run_key) if is_registered(client, name) else None
        version, reused, _ = _register_once(client, name, run_key, log, alias=alias, existing=existing,
                                            tags=_model_file_tags)
    return LoggedTraining(run.info.run_id, name, version, alias, f"models:/{name}@{alias}", reused, version)


def _model_file_tags(info) -> dict[str, str]:
    """A logged scikit-learn model's version tags: the SHA-256 of its serialized estimator and its format, which
    ``load_for_scoring`` checks before it deserializes anything."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="manymodels-") as tmp:
        path, fmt = model_file(Path(mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, dst_path=tmp)))
        return {INDEX_TAG: model_index.file_sha256(path), FORMAT_TAG: fmt}


# ---------------------------------------------------------------- scoring: registered models as the workers need them


