"""Registered model stores copied where every worker can read them (a Volume on Databricks, the project folder
locally), content-addressed: a staged copy is named after its index's SHA-256, published atomically, and checked
against that index by the driver and again by each worker before any blob is loaded."""
from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from manymodels.core.model_bytes import ModelIntegrityError
from manymodels.core.routing import REFUSED
from manymodels.settings import project_home
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


def staging_root() -> Path:
    return project_home() / "scoring"


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


def stage_registered(index_file: Path, index: ModelIndex, fetch_models, staging: str) -> str:
    """Stage a registered store under ``staging/reg-<index SHA-256>`` (once per content: never stale): its index
    (already checked against the version's tag) and its ``models.parquet``, fetched by ``fetch_models(dest)`` and
    checked against the index's SHA-256 of it before it is published. Returns the folder."""
    folder = Path(staging) / f"reg-{index.sha256[:40]}"
    if staged_index(folder, index.sha256) is not None:
        return str(folder)
    tmp = Path(staging) / f".reg-{index.sha256[:16]}.{uuid.uuid4().hex}"
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
