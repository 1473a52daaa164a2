"""Where MLflow records: the tracking URI, the experiment, registered model names, the tags manymodels keys its
runs and versions by, and a training run's MLflow run found again by its tag. Driver only."""
from __future__ import annotations

import os
from dataclasses import dataclass

from manymodels.errors import InputError
from manymodels.locations import compose_name
from manymodels.settings import EXPERIMENT_ENV, USER_ENV, on_databricks, project_home
from manymodels.tracking.filters import tag_equals

RUN_TAG = "manymodels.training_run_id"
FINGERPRINT_TAG = "manymodels.run_fingerprint"  # model_index.run_fingerprint of the registered training run
INDEX_TAG = "manymodels.index_sha256"  # SHA-256 of the version's model index (router) or model files (one model)
FORMAT_TAG = "manymodels.model_format"  # one model: the serialization format it was registered in
DEFAULT_EXPERIMENT = "manymodels"
DEFAULT_MODEL_NAME = "manymodels_router"


@dataclass(frozen=True)
class TrackingContext:
    tracking_uri: str
    registry_uri: str
    experiment_id: str
    experiment_name: str


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
    name = experiment_name(experiment or os.environ.get(EXPERIMENT_ENV), tracking_uri)
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


def experiment_name(name: str | None, tracking_uri: str, user=None) -> str:
    """The experiment to record in. On a Databricks workspace (tracking URI ``databricks``) an experiment is a
    workspace path, which must be absolute (https://docs.databricks.com/en/mlflow/experiments.html): empty gives
    ``/Users/<current user>/manymodels``, a relative name is refused naming the fix. Elsewhere empty gives
    ``manymodels``. ``user``: a function giving the user name (default: ``databricks_user``)."""
    name = (name or "").strip()
    if not tracking_uri.startswith("databricks"):
        return name or DEFAULT_EXPERIMENT
    if not name:
        return f"/Users/{(user or databricks_user)()}/{DEFAULT_EXPERIMENT}"
    if not name.startswith("/"):
        raise InputError(f"experiment={name!r}: a Databricks workspace names experiments by absolute workspace "
                         f"paths. Fix: experiment=/Users/<you>/{name} (or /Shared/{name}), or leave it empty for "
                         f"/Users/<you>/{DEFAULT_EXPERIMENT}.")
    return name


def databricks_user() -> str:
    """The workspace user the code runs as: ``$MANYMODELS_USER``, else the SDK's ``current_user.me()`` (a
    notebook's or job's own credentials)."""
    if os.environ.get(USER_ENV):
        return os.environ[USER_ENV]
    from databricks.sdk import WorkspaceClient  # lazy: only on a Databricks workspace

    return WorkspaceClient().current_user.me().user_name


def model_name(name: str | None = None, catalog: str | None = None, schema: str | None = None) -> str:
    """Registered model name: ``catalog.schema.name`` for Unity Catalog, the bare name otherwise."""
    return compose_name(name or DEFAULT_MODEL_NAME, catalog, schema)


def ui_command(ctx: TrackingContext) -> str:
    if ctx.tracking_uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {ctx.tracking_uri} --host 127.0.0.1 --port 5000"
    return f"open the MLflow UI of {ctx.tracking_uri}"


def find_run(ctx: TrackingContext, training_run_id: str) -> str | None:
    run = run_of(ctx, training_run_id)
    return run.info.run_id if run else None


def run_of(ctx: TrackingContext, training_run_id: str):
    """The MLflow run of a training run (found by its tag), or None."""
    import mlflow

    if not ctx.experiment_id:  # no experiment yet: no run
        return None
    by_run = tag_equals(RUN_TAG, training_run_id, "training_run_id")  # quoted, or refused naming it
    runs = mlflow.search_runs([ctx.experiment_id], filter_string=by_run, output_format="list", max_results=1)
    return runs[0] if runs else None
