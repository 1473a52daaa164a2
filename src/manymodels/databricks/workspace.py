"""The Databricks workspace, from a laptop or CI, on databricks-sdk: schema and volume, data upload,
running the deployed bundle jobs, and the nightly job's register step (quality gate + @champion, decided by
``tracking.promotion`` through MLflow's client on the same workspace).

Authentication is the SDK's standard configuration only: ``DATABRICKS_HOST`` plus whatever credentials
the environment provides (OAuth via ``databricks auth login``, a service principal's client id and
secret in CI, the notebook's own identity inside a job), or a profile of ``~/.databrickscfg``. Nothing
here takes or stores a token. Every function receives the ``WorkspaceClient`` explicitly, so tests
replace the workspace API (and only it) with autospecs of the SDK's service classes. Nothing runs at
import time; the SDK is imported when a client is made.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from manymodels.core.checks import check_seconds
from manymodels.errors import QualityGateError  # noqa: F401  (raised by promote, importable from here too)
from manymodels.settings import DEFAULT_CATALOG, DEFAULT_SCHEMA, DEFAULT_VOLUME, volume_path

# Tags every bundle job carries (resources/*.job.yml): development mode prefixes job names with
# "[dev <user>] ", so the jobs are found by these, not by name.
JOB_TAG = "manymodels_job"
TARGET_TAG = "bundle_target"
TERMINAL_LIFE_CYCLE = ("TERMINATED", "SKIPPED", "INTERNAL_ERROR")


class WorkspaceError(RuntimeError):
    """A workspace call that cannot go on: the message says what was asked, what happened and the fix."""


def client(profile: str | None = None):
    """A ``WorkspaceClient`` from the SDK's standard configuration (environment, or ``profile``)."""
    try:
        from databricks.sdk import WorkspaceClient
    except ImportError as exc:  # pragma: no cover - databricks-sdk is a dependency of the package
        raise WorkspaceError("databricks-sdk is not installed: pip install databricks-sdk") from exc
    return WorkspaceClient(profile=profile) if profile else WorkspaceClient()


def _errors():
    from databricks.sdk import errors

    return errors


# ---------------------------------------------------------------- schema and volume

def ensure_schema_and_volume(w, catalog: str = DEFAULT_CATALOG, schema: str = DEFAULT_SCHEMA,
                             volume: str = DEFAULT_VOLUME, *, log: Callable[[str], None] = print) -> dict[str, str]:
    """Create ``catalog.schema`` and the managed volume ``catalog.schema.volume`` unless they exist.

    Returns ``{"schema": "created" | "exists", "volume": "created" | "exists"}``. The catalog itself
    must exist (creating catalogs is an account-level decision). Permission errors name the grant needed.
    """
    from databricks.sdk.service.catalog import VolumeType

    errors = _errors()
    outcome = {}
    try:
        w.schemas.create(name=schema, catalog_name=catalog, comment="manymodels: data, model tables, models")
        outcome["schema"] = "created"
    except (errors.AlreadyExists, errors.ResourceAlreadyExists):
        outcome["schema"] = "exists"
    except errors.PermissionDenied as exc:
        raise WorkspaceError(
            f"Cannot create schema {catalog}.{schema}: permission denied ({exc}). Ask a catalog owner for "
            f"`GRANT USE CATALOG, CREATE SCHEMA ON CATALOG {catalog} TO <you>`, or pass --catalog/--schema of "
            "a schema you own.") from exc
    except errors.NotFound as exc:
        raise WorkspaceError(f"Catalog {catalog!r} does not exist ({exc}): pass --catalog with an existing "
                             "catalog (`databricks catalogs list`).") from exc
    log(f"schema  {catalog}.{schema}: {outcome['schema']}")
    try:
        w.volumes.create(catalog_name=catalog, schema_name=schema, name=volume, volume_type=VolumeType.MANAGED,
                         comment="manymodels input data")
        outcome["volume"] = "created"
    except (errors.AlreadyExists, errors.ResourceAlreadyExists):
        outcome["volume"] = "exists"
    except errors.PermissionDenied as exc:
        raise WorkspaceError(
            f"Cannot create volume {catalog}.{schema}.{volume}: permission denied ({exc}). Ask the schema owner "
            f"for `GRANT USE SCHEMA, CREATE VOLUME ON SCHEMA {catalog}.{schema} TO <you>`.") from exc
    log(f"volume  {catalog}.{schema}.{volume}: {outcome['volume']} ({volume_path(catalog, schema, volume)})")
    return outcome


# ---------------------------------------------------------------- upload

@dataclass(frozen=True)
class Uploaded:
    remote_dir: str
    files: int
    bytes: int


def upload(w, source: str | Path, remote_dir: str, *, overwrite: bool = True,
           log: Callable[[str], None] = print) -> Uploaded:
    """Upload a local file or folder (the gzipped per-group files, a Parquet folder, or a whole prepared
    panel) to ``remote_dir`` under ``/Volumes/...``, keeping relative paths. Hidden files (Spark's
    ``.crc``) are skipped. Returns what was uploaded."""
    errors = _errors()
    source = Path(source)
    if not source.exists():
        raise WorkspaceError(f"Nothing to upload at {source}: run `manymodels prepare --output-dir {source}` "
                             "first, or pass the folder holding your data.")
    if not remote_dir.startswith("/Volumes/"):
        raise WorkspaceError(f"Upload target {remote_dir!r} is not a volume path: expected "
                             "/Volumes/<catalog>/<schema>/<volume>/...")
    files = [source] if source.is_file() else sorted(
        p for p in source.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts))
    if not files:
        raise WorkspaceError(f"{source} holds no files to upload.")
    base = source.parent if source.is_file() else source
    remote_dir = remote_dir.rstrip("/")
    made: set[str] = set()
    total = 0
    for i, path in enumerate(files, 1):
        remote = f"{remote_dir}/{path.relative_to(base).as_posix()}"
        parent = remote.rsplit("/", 1)[0]
        try:
            if parent not in made:
                w.files.create_directory(parent)  # creates parents too; no error if it exists
                made.add(parent)
            with path.open("rb") as contents:
                w.files.upload(remote, contents, overwrite=overwrite)
        except errors.PermissionDenied as exc:
            raise WorkspaceError(f"Cannot write {remote}: permission denied ({exc}). Ask the volume owner for "
                                 "`GRANT READ VOLUME, WRITE VOLUME ON VOLUME "
                                 "<catalog>.<schema>.<volume> TO <you>`.") from exc
        except (errors.AlreadyExists, errors.ResourceAlreadyExists) as exc:
            raise WorkspaceError(f"{remote} already exists and overwrite is off: pass --overwrite or choose "
                                 "another --dest.") from exc
        total += path.stat().st_size
        if i == len(files) or i % 50 == 0:
            log(f"uploaded {i}/{len(files)} files ({total / 1e6:.1f} MB) to {remote_dir}")
    return Uploaded(remote_dir, len(files), total)


# ---------------------------------------------------------------- deployed jobs

def find_job(w, job_key: str, target: str = "dev"):
    """The job the bundle deployed for ``job_key`` (nightly, weekly_tuning, fold_ensemble) to ``target``.

    Found by its tags, since development mode renames jobs. When several users deployed the same dev
    target, the current user's own deployment is chosen.
    """
    found = [job for job in w.jobs.list()
             if job.settings is not None and (job.settings.tags or {}).get(JOB_TAG) == job_key
             and (job.settings.tags or {}).get(TARGET_TAG) == target]
    if len(found) > 1:
        me = w.current_user.me().user_name
        found = [job for job in found if job.creator_user_name == me] or found
    if not found:
        raise WorkspaceError(f"No deployed job tagged {JOB_TAG}={job_key}, {TARGET_TAG}={target} in this workspace: "
                             f"deploy it first with `databricks bundle deploy -t {target}` (jobs: nightly, "
                             "weekly_tuning, fold_ensemble).")
    if len(found) > 1:
        listed = ", ".join(f"{job.job_id} ({job.settings.name}, by {job.creator_user_name})" for job in found[:5])
        raise WorkspaceError(f"Several jobs match {job_key} on target {target}: {listed}; pass --job-id.")
    return found[0]


@dataclass
class RunResult:
    run_id: int
    url: str
    life_cycle_state: str
    result_state: str | None
    tasks: dict[str, str] = field(default_factory=dict)
    message: str = ""

    @property
    def succeeded(self) -> bool:
        return self.result_state == "SUCCESS"


def _value(enum) -> str | None:
    return None if enum is None else getattr(enum, "value", str(enum))


def _task_states(run) -> dict[str, str]:
    out = {}
    for task in run.tasks or []:
        state = task.state
        out[task.task_key] = (_value(state.result_state) or _value(state.life_cycle_state) or "PENDING") \
            if state else "PENDING"
    return out


def run_job(w, job_id: int, parameters: dict[str, str] | None = None, *, only: list[str] | None = None,
            wait: bool = True, timeout_s: float = 4 * 3600, poll_s: float = 15.0,
            log: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep,
            clock: Callable[[], float] = time.monotonic) -> RunResult:
    """Start the job with ``parameters`` (job parameter names = notebook widget names) and, when ``wait``,
    report every task state change until the run ends. Returns the final state and the run's URL; a
    failed run is returned (``succeeded`` False, failing tasks and their messages), not raised."""
    timeout_s, poll_s = check_seconds("timeout", timeout_s), check_seconds("poll_s", poll_s)
    errors = _errors()
    try:
        waiter = w.jobs.run_now(job_id=job_id, job_parameters=dict(parameters or {}), only=only)
    except errors.PermissionDenied as exc:
        raise WorkspaceError(f"Cannot run job {job_id}: permission denied ({exc}). The job's owner can grant "
                             "CAN MANAGE RUN (bundle `permissions`).") from exc
    run_id = waiter.run_id
    run = w.jobs.get_run(run_id)
    log(f"run {run_id} started: {run.run_page_url}")
    start, seen = clock(), {}
    while True:
        states = _task_states(run)
        for key, state in states.items():
            if seen.get(key) != state:
                log(f"[{clock() - start:6.0f} s] {key}: {state}")
        seen = states
        life = _value(run.state.life_cycle_state) if run.state else None
        if not wait or life in TERMINAL_LIFE_CYCLE:
            break
        if clock() - start > timeout_s:
            raise WorkspaceError(f"Run {run_id} still {life} after {timeout_s:.0f} s; it keeps running: "
                                 f"{run.run_page_url} (cancel with `databricks jobs cancel-run {run_id}`).")
        sleep(poll_s)
        run = w.jobs.get_run(run_id)
    result = RunResult(run_id, run.run_page_url, life or "PENDING",
                       _value(run.state.result_state) if run.state else None, states,
                       (run.state.state_message or "") if run.state else "")
    failed = {t.task_key: t.state.state_message for t in run.tasks or []
              if t.state is not None and _value(t.state.result_state) not in (None, "SUCCESS")}
    if failed:
        result.message = "; ".join(f"{key}: {msg or 'failed'}" for key, msg in failed.items()) or result.message
    log(f"run {run_id}: {result.life_cycle_state} {result.result_state or ''} {result.url}".rstrip())
    return result


# ---------------------------------------------------------------- register step of the nightly job

def mlflow_client(w):
    """An ``MlflowClient`` on the workspace of ``w``: its runs (``databricks``) and Unity Catalog's registry
    (``databricks-uc``), through the profile ``w`` was made with, if any (else the same environment)."""
    from mlflow import MlflowClient

    profile = getattr(getattr(w, "config", None), "profile", None)
    suffix = f"://{profile}" if profile else ""
    return MlflowClient(tracking_uri=f"databricks{suffix}", registry_uri=f"databricks-uc{suffix}")


def promote(w, model_name: str, alias: str = "challenger", champion_alias: str = "champion",
            min_ok_fraction: float = 0.95, *, metric: str | None = None, max_median_worse: float = 0.05,
            max_worse_fraction: float = 0.6, min_shared_fraction: float = 0.5, dry_run: bool = False,
            log: Callable[[str], None] = print):
    """The nightly job's register step: move ``@champion_alias`` of the Unity Catalog model ``model_name`` to the
    version ``@alias`` points at if it passes the quality gate; return the ``tracking.promotion.Promotion``.

    The decision is ``tracking.promotion.promote``'s (enough groups ok, and not worse than the champion on
    ``metric``; see docs/databricks.md), made through MLflow's client on the workspace of ``w`` (``mlflow_client``):
    ``w`` only names that workspace, no SDK call is made. A failed gate raises ``QualityGateError`` after writing
    the verdict onto the version, leaving ``@champion_alias`` where it was."""
    # lazy: mlflow (and the tracking layer) load only for this command, not with the other workspace helpers
    from manymodels.core.promotion import GateThresholds
    from manymodels.tracking import promotion

    GateThresholds(min_ok_fraction, max_median_worse, max_worse_fraction, min_shared_fraction)  # before any call
    if model_name.count(".") != 2:
        raise WorkspaceError(f"model_name {model_name!r} is not a Unity Catalog name: expected catalog.schema.model.")
    return promotion.promote(model_name, alias=alias, champion_alias=champion_alias, metric=metric,
                             max_median_worse=max_median_worse, max_worse_fraction=max_worse_fraction,
                             min_shared_fraction=min_shared_fraction, min_ok_fraction=min_ok_fraction,
                             dry_run=dry_run, client=mlflow_client(w), log=log)
