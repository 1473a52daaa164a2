"""The staging folder every worker can read (``staging_root``: one setting for staged model stores and search data;
a Volume folder on Databricks), and registered model stores copied there, content-addressed: a staged copy is named
after its index's SHA-256, published atomically, and checked against that index by the driver and again by each
worker before any blob is loaded."""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from manymodels.core.model_bytes import ModelIntegrityError
from manymodels.core.routing import REFUSED
from manymodels.settings import (
    CATALOG_ENV,
    DEFAULT_CATALOG,
    DEFAULT_SCHEMA,
    DEFAULT_VOLUME,
    SCHEMA_ENV,
    STAGING_ENV,
    VOLUME_ENV,
    on_databricks,
    project_home,
    volume_path,
)
from manymodels.storage import model_index
from manymodels.storage.model_index import INDEX_FILE, ModelIndex
from manymodels.storage.packed_store import MODELS_FILE


@dataclass(frozen=True)
class GroupModels:
    """Where the workers find a training run's models and how to call them."""

    store: str  # folder holding models.parquet, readable by every worker
    key_cols: tuple[str, ...]
    feature_cols: tuple[str, ...]
    task: str  # regression | classification
    version: str  # e.g. "manymodels_router/3" or the training run id
    run_label: str
    feature_types: dict = field(default_factory=dict)  # column -> MLflow type from the signature
    pass_dataframe: bool = False  # the models were trained on a DataFrame with the feature names
    index_sha256: str = ""  # of the store's index file, as registered (or as packed from the model table)


MODELS_DIR, SEARCH_DIR = "models", "search"  # <root>/models/<store>, <root>/search/<user>/<run>
_log = logging.getLogger("manymodels")
_WARNED: set[tuple[str, str]] = set()


def staging_root(staging_dir: str | os.PathLike | None = None, *, master: str | None = None) -> Path:
    """The folder every worker reads staged model stores (``<root>/models/...``) and search data
    (``<root>/search/<user>/...``) from:

    * ``staging_dir`` when given (a job's ``staging_dir`` parameter, ``score_per_group(..., staging_dir=)``);
    * else ``$MANYMODELS_STAGING``;
    * else on Databricks a folder of the bundle's Volume, ``/Volumes/<catalog>/<schema>/<volume>/_staging``
      (``MANYMODELS_CATALOG`` / ``MANYMODELS_SCHEMA`` / ``MANYMODELS_VOLUME``, default ``settings.DEFAULT_*``):
      never ``/dbfs/tmp`` (shared by every user, absent on serverless) nor the driver's working directory, which
      executors on other machines cannot read;
    * else ``$MANYMODELS_HOME/staging``, the embedded default: fine for local Spark and a cluster on this
      machine; with any other ``master`` (the session's ``spark.master``, given by the Spark layer) a warning says
      to pass ``staging_dir`` or set ``MANYMODELS_STAGING``.
    """
    if staging_dir:
        return Path(staging_dir)
    if os.environ.get(STAGING_ENV):
        return Path(os.environ[STAGING_ENV])
    if on_databricks():
        return Path(volume_path(os.environ.get(CATALOG_ENV) or DEFAULT_CATALOG,
                                os.environ.get(SCHEMA_ENV) or DEFAULT_SCHEMA,
                                os.environ.get(VOLUME_ENV) or DEFAULT_VOLUME, "_staging"))
    root = project_home() / "staging"
    _warn_if_driver_local(root, master)
    return root


def models_folder(staging: str | os.PathLike | None = None) -> Path:
    """Where model stores are staged: ``<staging_root(staging)>/models``."""
    return staging_root(staging) / MODELS_DIR


def _warn_if_driver_local(root: Path, master: str | None) -> None:
    if not master or master.startswith("local") or (str(root), master) in _WARNED:
        return
    _WARNED.add((str(root), master))
    _log.warning("Staging under %s, the driver's $MANYMODELS_HOME, while Spark runs on %s: executors on other "
                 "machines cannot read it; pass staging_dir or set %s to a folder every worker can read.",
                 root, master, STAGING_ENV)


def staged_index(folder: Path, sha: str | None = None) -> ModelIndex | None:
    """The index of a staged store when it is there whole (and, with ``sha``, has that SHA-256), else None."""
    if not (folder / INDEX_FILE).exists() or not (folder / MODELS_FILE).exists():
        return None
    try:
        index = model_index.read(folder / INDEX_FILE, sha)
    except (ModelIntegrityError, OSError, ValueError):
        return None
    return index if (folder / MODELS_FILE).stat().st_size == index.meta.get("models_bytes") else None


def publish(tmp: Path, folder: Path) -> None:
    """Move a fully written staging folder into place; a concurrent stager's identical copy may win."""
    if folder.exists():  # incomplete or stale: set aside, then replaced
        shutil.rmtree(folder.with_name(folder.name + ".old"), ignore_errors=True)
        try:
            os.replace(folder, folder.with_name(folder.name + ".old"))
        except OSError:
            pass
    try:
        os.replace(tmp, folder)
    except OSError:  # another process published the same content first
        shutil.rmtree(tmp, ignore_errors=True)


def stage_registered(index_file: Path, index: ModelIndex, fetch_models, staging: str | None) -> str:
    """Stage a registered store under ``<staging root>/models/reg-<index SHA-256>`` (``staging``: the root, see
    ``staging_root``; once per content: never stale): its index (already checked against the version's tag) and
    its ``models.parquet``, fetched by ``fetch_models(dest)`` and checked against the index's SHA-256 of it before
    it is published. Returns the folder."""
    folder = models_folder(staging) / f"reg-{index.sha256[:40]}"
    if staged_index(folder, index.sha256) is not None:
        return str(folder)
    tmp = folder.with_name(f".reg-{index.sha256[:16]}.{uuid.uuid4().hex}")
    tmp.mkdir(parents=True)
    try:
        fetch_models(tmp / MODELS_FILE)
        found = model_index.file_sha256(tmp / MODELS_FILE)
        if found != index.meta.get("models_sha256"):
            raise ModelIntegrityError(f"the packed models of {index.meta.get('label', 'this version')} have SHA-256 "
                                      f"{found}, but its index records {index.meta.get('models_sha256')}: the "
                                      "registry's copy was changed after registration.")
        shutil.copyfile(index_file, tmp / INDEX_FILE)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, folder)
    return str(folder)


def agrees(entries: dict, expected: dict) -> bool:
    """A staged index serves exactly ``expected`` (groups it refused aside)."""
    if set(entries) != set(expected):
        return False
    return all(e["status"] == REFUSED or (e["status"], e["model_sha256"], e["model_format"]) == tuple(expected[k])
               for k, e in entries.items())
