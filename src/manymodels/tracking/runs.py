"""MLflow, from the driver only: the parent run, per-group artifacts, the registry and the router.

Everything a training run logs is keyed by its ``training_run_id``: the MLflow run is found by tag
and reused, group models go to deterministic paths (``models/<key path>.pkl``), and a
registered version already made for the training run is reused. Logging the same training run
again therefore replaces files instead of adding runs, artifacts or versions. The number of
tracking calls per training run does not depend on the number of groups (artifact upload aside).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from manymodels.core import model_bytes
from manymodels.core.keys import key_path
from manymodels.core.schema import METRIC_COLUMNS, STATUS_FAILED, STATUS_OK, STATUS_SKIPPED
from manymodels.errors import InputError
from manymodels.settings import EXPERIMENT_ENV, on_databricks, project_home
from manymodels.spark.training import check_rerun
from manymodels.storage import model_index, model_table
from manymodels.storage.model_table import iter_model_table
from manymodels.storage.packed_store import PackedModels
from manymodels.storage.staging import GroupModels, stage_registered, staging_root
from manymodels.tracking.filters import equals, tag_equals
from manymodels.tracking.router_pyfunc import GroupRouter

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # logged with each model (code_paths): the package itself
RUN_TAG = "manymodels.training_run_id"
FINGERPRINT_TAG = "manymodels.run_fingerprint"  # model_index.run_fingerprint of the registered training run
INDEX_TAG = "manymodels.index_sha256"  # SHA-256 of the version's model index (router) or model files (one model)
FORMAT_TAG = "manymodels.model_format"  # one model: the serialization format it was registered in
DEFAULT_EXPERIMENT = "manymodels"
DEFAULT_MODEL_NAME = "manymodels_router"
SPARK_TO_MLFLOW = {"bigint": "long", "int": "integer", "smallint": "integer", "tinyint": "integer",
                   "double": "double", "float": "float", "string": "string", "boolean": "boolean",
                   "date": "datetime", "timestamp": "datetime", "timestamp_ntz": "datetime", "binary": "binary"}


def mlflow_type(spark_type: str) -> str:
    """The MLflow signature type of a Spark column type (decimals as double: ``keys.canonical_key`` gives a decimal
    and the double of the same value one text, so a router still finds the group)."""
    return SPARK_TO_MLFLOW.get(spark_type, "double")


@dataclass(frozen=True)
class TrackingContext:
    tracking_uri: str
    registry_uri: str
    experiment_id: str
    experiment_name: str


@dataclass(frozen=True)
class LoggedTraining:
    run_id: str
    model_name: str
    version: str
    alias: str
    model_uri: str  # models:/<name>@<alias>
    reused: bool
    alias_version: str = ""  # where the alias points now: this version, or a concurrent run's that committed later


def local_tracking_uri() -> str:
    return f"sqlite:///{project_home() / 'mlflow.db'}"


def configure(tracking_uri: str | None = None, experiment: str | None = None, create: bool = True) -> TrackingContext:
    """Point MLflow at the right store and make sure the experiment exists (on the driver, before any worker)."""
    import mlflow

    if tracking_uri is None:
        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or ("databricks" if on_databricks() else None)
    if tracking_uri is None:
        project_home().mkdir(parents=True, exist_ok=True)
        tracking_uri = local_tracking_uri()
    registry_uri = os.environ.get("MLFLOW_REGISTRY_URI") or (
        "databricks-uc" if tracking_uri == "databricks" else tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    name = experiment or os.environ.get(EXPERIMENT_ENV) or DEFAULT_EXPERIMENT
    found = mlflow.get_experiment_by_name(name)
    if found is None and not create:  # read-only callers (scoring) make nothing: experiment_id is ''
        return TrackingContext(tracking_uri, registry_uri, "", name)
    if found is None:
        location = None
        if tracking_uri.startswith("sqlite:"):
            location = (project_home() / "mlartifacts").as_uri()
        try:
            experiment_id = mlflow.create_experiment(name, artifact_location=location)
        except Exception:  # noqa: BLE001 - RESOURCE_ALREADY_EXISTS: a concurrent run made it since the lookup
            found = mlflow.get_experiment_by_name(name)
            if found is None:
                raise
            experiment_id = found.experiment_id
    else:
        experiment_id = found.experiment_id
    return TrackingContext(tracking_uri, registry_uri, experiment_id, name)


def model_name(name: str | None = None, catalog: str | None = None, schema: str | None = None) -> str:
    """Registered model name: ``catalog.schema.name`` for Unity Catalog, the bare name otherwise."""
    name = name or DEFAULT_MODEL_NAME
    return f"{catalog}.{schema}.{name}" if catalog and schema and name.count(".") == 0 else name


def ui_command(ctx: TrackingContext) -> str:
    if ctx.tracking_uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {ctx.tracking_uri} --host 127.0.0.1 --port 5000"
    return f"open the MLflow UI of {ctx.tracking_uri}"


def _find_run(ctx: TrackingContext, training_run_id: str) -> str | None:
    run = _run_of(ctx, training_run_id)
    return run.info.run_id if run else None


def _run_of(ctx: TrackingContext, training_run_id: str):
    """The MLflow run of a training run (found by its tag), or None."""
    import mlflow

    if not ctx.experiment_id:  # no experiment yet: no run
        return None
    by_run = tag_equals(RUN_TAG, training_run_id, "training_run_id")  # quoted, or refused naming it
    runs = mlflow.search_runs([ctx.experiment_id], filter_string=by_run, output_format="list", max_results=1)
    return runs[0] if runs else None


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


def registered_fingerprint(name: str | None, training_run_id: str | None,
                           ctx: TrackingContext | None = None) -> str | None:
    """The run fingerprint recorded for ``training_run_id``: by its registered version of model ``name``
    (``"unrecorded"`` for a version registered before fingerprints were), else by its MLflow run in ``ctx``'s
    experiment (a run that crashed before it registered); None when neither exists."""
    from mlflow import MlflowClient

    client, name = MlflowClient(), model_name(name)
    if not training_run_id:
        return None
    existing = _existing_version(client, name, training_run_id) if _registered(client, name) else None
    if existing is not None:
        return (existing.tags or {}).get(FINGERPRINT_TAG, "unrecorded")
    run = _run_of(ctx, training_run_id) if ctx is not None else None
    return None if run is None else run.data.tags.get(FINGERPRINT_TAG)


def _existing_version(client, name: str, training_run_id: str):
    by_name = equals("name", name, "model name")  # quoted for MLflow's filter grammar, or refused naming it
    try:
        by_run = tag_equals(RUN_TAG, training_run_id, "training_run_id")
        versions = client.search_model_versions(f"{by_name} and {by_run}")
    except Exception:  # noqa: BLE001 - a registry without tag search, or a model not yet created
        versions = [v for v in client.search_model_versions(by_name) if v.tags.get(RUN_TAG) == training_run_id]
    return versions[0] if versions else None


def log_training(spark, table, ctx: TrackingContext, *, name: str | None = None, alias: str = "champion",
                 extra_params: dict | None = None, tables: dict[str, pd.DataFrame] | None = None) -> LoggedTraining:
    """Log a written model table as one MLflow run and register its router (once per training run).
    ``tables``: extra result tables (e.g. a search's cv results) logged as Parquet and CSV artifacts.

    A training run id names one set of models: logging it again with the same run fingerprint (the same groups,
    data and settings: a rerun after a crash) reuses its run and registered version; with another fingerprint it
    raises ``training.TrainingRunConflict`` before anything is logged. Every model is checked against what the
    training run wrote (``router.PackedModels``). The model table becomes its location's current table after the
    version is registered and before the alias moves, and the alias then follows the location's current table
    (``_settle_alias``): two runs on one location end with the table and the alias on the same run."""
    import mlflow
    from mlflow import MlflowClient


    client = MlflowClient()
    name = model_name(name)
    existing = _existing_version(client, name, table.training_run_id) if _registered(client, name) else None
    with tempfile.TemporaryDirectory(prefix="manymodels-") as tmp:
        out = Path(tmp)
        metrics, packed = _stream_models(spark, table, out)  # checked before anything is logged
        fingerprint = table.fingerprint or packed.digest[:32]
        previous = _run_of(ctx, table.training_run_id)
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
    run_id = _find_run(ctx, run_key)
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

        existing = _existing_version(client, name, run_key) if _registered(client, name) else None
        version, reused, _ = _register_once(client, name, run_key, log, alias=alias, existing=existing,
                                            tags=_model_file_tags)
    return LoggedTraining(run.info.run_id, name, version, alias, f"models:/{name}@{alias}", reused, version)


def _model_file(local: Path) -> tuple[Path, str]:
    """The serialized estimator of a downloaded scikit-learn model folder and its serialization format."""
    from mlflow.models import Model

    conf = Model.load(str(local)).flavors["sklearn"]
    return local / conf["pickled_model"], conf.get("serialization_format") or "cloudpickle"


def _model_file_tags(info) -> dict[str, str]:
    """A logged scikit-learn model's version tags: the SHA-256 of its serialized estimator and its format, which
    ``load_for_scoring`` checks before it deserializes anything."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="manymodels-") as tmp:
        path, fmt = _model_file(Path(mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, dst_path=tmp)))
        return {INDEX_TAG: model_index.file_sha256(path), FORMAT_TAG: fmt}


def _registered(client, name: str) -> bool:
    try:
        client.get_registered_model(name)
        return True
    except Exception:  # noqa: BLE001 - RESOURCE_DOES_NOT_EXIST
        return False


# ---------------------------------------------------------------- scoring: registered models as the workers need them

def _resolve_version(client, source: str):
    """A model version from ``models:/name@alias``, ``models:/name/N`` or the MLflow run id of a training run."""

    by_run = None if source.startswith("models:/") else equals("run_id", source, "MLflow run id")
    try:
        if source.startswith("models:/"):
            name, _, ref = source[len("models:/"):].partition("@")
            if ref:
                return client.get_model_version_by_alias(name, ref)
            name, _, number = source[len("models:/"):].rpartition("/")
            return client.get_model_version(name, number)
        found = client.search_model_versions(by_run)
    except Exception as exc:  # noqa: BLE001 - the registry says what is missing
        raise InputError(f"Model {source!r} not found in the registry at {client._registry_uri}: "
                         f"{type(exc).__name__}: {str(exc)[:300]}. Check the name and alias (or version); "
                         "`manymodels train` registers the router with the alias 'champion'.") from exc
    if not found:
        raise InputError(f"No registered model was logged by MLflow run {source!r}: pass 'models:/<name>@<alias>' "
                         "or the run id of a training run that registered its router.")
    return found[0]


def group_models(source: str, staging: str | None = None) -> GroupModels:
    """The registered router of ``source`` (``models:/name@alias``, ``models:/name/3`` or a training run's MLflow
    run id) as ``GroupModels`` that ``spark.scoring.score_per_group`` scores with.

    Its index is downloaded (small) and checked against the version's ``INDEX_TAG``; ``stage_registered`` then
    copies the packed store once per content to ``staging`` (a path every worker can read; default the project
    folder),
    and the workers check the staged index against the same SHA-256 before they use it. Nothing of the router is
    unpickled here. A router registered before it had an index is staged as it was then (by version).
    """
    import mlflow
    from mlflow import MlflowClient

    if not isinstance(source, str) or not source:
        raise InputError(f"model={source!r}: expected a ModelTable, 'models:/<name>@<alias>', "
                         "'models:/<name>/<version>' or an MLflow run id of a training run.")
    staging = staging or str(staging_root())
    client = MlflowClient()
    mv = _resolve_version(client, source)
    label = f"{mv.name}/{mv.version}"
    registered = (mv.tags or {}).get(INDEX_TAG)
    if registered is None:
        return _legacy_router_models(mv, label, staging)
    base = client.get_model_version_download_uri(mv.name, mv.version).rstrip("/")

    def fetch(name: str, dest: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="manymodels-") as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=f"{base}/{ROUTER_ARTIFACTS}/{name}", dst_path=tmp)
            shutil.move(local, dest)

    with tempfile.TemporaryDirectory(prefix="manymodels-") as tmp:
        index_file = Path(tmp) / model_index.INDEX_FILE
        fetch(model_index.INDEX_FILE, index_file)
        try:
            index = model_index.read(index_file, registered, what=f"model version {label}")
        except model_bytes.ModelIntegrityError as exc:
            raise model_bytes.ModelIntegrityError(f"Refusing to score with model version {label}: {exc}") from exc
        index.meta["label"] = label
        folder = stage_registered(index_file, index, partial(fetch, "models.parquet"), staging)
    meta = index.meta
    info = mlflow.models.get_model_info(f"models:/{mv.name}/{mv.version}")  # reads MLmodel: the signature's types
    types = {c.name: c.type.name for c in info.signature.inputs.inputs} if info.signature else {}
    return GroupModels(folder, tuple(meta["key_cols"]), tuple(meta["feature_cols"]), meta["task"], label,
                       f"training run {meta['training_run_id']} ({label})",
                       {c: types.get(c, "double") for c in meta["feature_cols"]},
                       pass_dataframe=bool(meta.get("pass_dataframe")), index_sha256=registered)


ROUTER_ARTIFACTS = "artifacts/router"  # where the pyfunc keeps the ``group_models`` folder inside the model


def _legacy_router_models(mv, label: str, staging: str):
    """A router registered before versions carried an index: staged by name and version, read as it was."""
    import mlflow


    folder = Path(staging) / f"{mv.name}@v{mv.version}"
    meta_path = folder / "columns.json"
    if not meta_path.exists() or "pass_dataframe" not in json.loads(meta_path.read_text()):
        with tempfile.TemporaryDirectory(prefix="manymodels-") as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{mv.name}/{mv.version}", dst_path=tmp)
            pyfunc = mlflow.pyfunc.load_model(local)
            router = pyfunc.unwrap_python_model()
            signature = pyfunc.metadata.signature
            outputs = {c.name: c.type.name for c in signature.outputs.inputs} if signature else {}
            meta = {"key_cols": router.key_cols, "feature_cols": router.feature_cols,
                    "task": "classification" if outputs.get("prediction") == "string" else "regression",
                    "types": {c.name: c.type.name for c in signature.inputs.inputs} if signature else {},
                    "run": router.training_run_id,
                    "pass_dataframe": bool(getattr(router, "pass_dataframe", False))}
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(router._root / "models.parquet", folder / "models.parquet")
            tmp_meta = folder / f".columns.{os.getpid()}"
            tmp_meta.write_text(json.dumps(meta))
            os.replace(tmp_meta, meta_path)
    meta = json.loads(meta_path.read_text())
    types = {c: meta["types"].get(c, "double") for c in meta["feature_cols"]}
    return GroupModels(str(folder), tuple(meta["key_cols"]), tuple(meta["feature_cols"]), meta["task"], label,
                       f"training run {meta['run']} ({label})", types, pass_dataframe=meta["pass_dataframe"])


def load_for_scoring(uri: str):
    """``(model object, version label, {input column: MLflow type})`` of any MLflow model URI; scikit-learn
    flavors load as the estimator itself, others as a pyfunc.

    A version manymodels registered (``log_estimator``: tuned and fold-ensemble models) carries the SHA-256 and
    the format of its serialized estimator in its tags: the downloaded file is checked against both before it is
    deserialized (``ModelIntegrityError`` / ``UntrustedModelError`` naming the version otherwise)."""
    import mlflow
    from mlflow import MlflowClient


    try:
        info = mlflow.models.get_model_info(uri)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"MLflow model {uri!r} not found: {type(exc).__name__}: {str(exc)[:300]}. Check the URI "
                         "(models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/<path>).") from exc
    types = {c.name: c.type.name for c in info.signature.inputs.inputs} if info.signature else {}
    version, tags = uri, {}
    if uri.startswith("models:/"):
        mv = _resolve_version(MlflowClient(), uri)
        version, tags = f"{mv.name}/{mv.version}", dict(mv.tags or {})
    if "sklearn" not in info.flavors:
        return mlflow.pyfunc.load_model(uri), version, types
    if INDEX_TAG not in tags:  # not registered by manymodels: nothing recorded to check it against
        return mlflow.sklearn.load_model(uri), version, types
    with tempfile.TemporaryDirectory(prefix="manymodels-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        path, fmt = _model_file(local)
        if fmt != tags.get(FORMAT_TAG, fmt):
            raise model_bytes.UntrustedModelError(
                f"Refusing to load model version {version}: it was registered as {tags[FORMAT_TAG]!r} but its files "
                f"now say {fmt!r}. Its artifacts were changed after registration; restore them or register again.")
        found = model_index.file_sha256(path)
        if found != tags[INDEX_TAG]:
            raise model_bytes.ModelIntegrityError(
                f"Refusing to load model version {version}: its {path.name} has SHA-256 {found} but {tags[INDEX_TAG]} "
                "was registered. Its artifacts were changed after registration; restore them or register again.")
        return mlflow.sklearn.load_model(str(local)), version, types
