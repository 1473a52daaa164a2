"""The model registry, read: a URI (``models:/name@alias``, ``models:/name/3``, a training run's MLflow run id)
turned into what the Spark layer scores with (``group_models``, ``load_for_scoring``), each checked against what
the version recorded when it was registered; and what a training run id already registered
(``registered_fingerprint``). Driver only."""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from functools import partial
from pathlib import Path

from manymodels.core import model_bytes
from manymodels.errors import InputError
from manymodels.storage import model_index
from manymodels.storage.staging import GroupModels, stage_registered, staging_root
from manymodels.tracking.context import (
    FINGERPRINT_TAG,
    FORMAT_TAG,
    INDEX_TAG,
    RUN_TAG,
    TrackingContext,
    model_name,
    run_of,
)
from manymodels.tracking.filters import equals


def registered_fingerprint(name: str | None, training_run_id: str | None,
                           ctx: TrackingContext | None = None) -> str | None:
    """The run fingerprint recorded for ``training_run_id``, found through its MLflow run in ``ctx``'s experiment: by
    the version of model ``name`` that run registered (``"unrecorded"`` for a version registered before fingerprints
    were), else by the run itself (a run that crashed before it registered); None when there is no such run."""
    from mlflow import MlflowClient

    client, name = MlflowClient(), model_name(name)
    if not training_run_id:
        return None
    run = run_of(ctx, training_run_id) if ctx is not None else None
    existing = existing_version(client, name, training_run_id, run.info.run_id if run else None)
    if existing is not None:
        return (existing.tags or {}).get(FINGERPRINT_TAG, "unrecorded")
    return None if run is None else run.data.tags.get(FINGERPRINT_TAG)


def existing_version(client, name: str, training_run_id: str, run_id: str | None):
    """The version of model ``name`` that the MLflow run ``run_id`` registered for ``training_run_id`` (read with
    ``get_model_version``: tags and description included), or None; the oldest when there are several.

    A training run id has one MLflow run (``context.run_of``), so its versions are found by that run's id: a
    ``run_id = '...'`` search, the one filter Unity Catalog has besides ``name = '...'`` (no tag filters), with the
    name checked here. Unity Catalog's search results may carry no tags, so each candidate is read again before its
    ``RUN_TAG`` (and, by the caller, its ``FINGERPRINT_TAG``) is trusted. No run: nothing registered."""
    if not run_id:
        return None
    by_run = equals("run_id", run_id, "MLflow run id")  # quoted for MLflow's filter grammar, or refused naming it
    found = sorted((v for v in client.search_model_versions(by_run) if v.name == name), key=lambda v: int(v.version))
    for candidate in found:
        full = client.get_model_version(name, str(candidate.version))
        if (full.tags or {}).get(RUN_TAG) == training_run_id:
            return full
    return None


def logged_model_id(version) -> str | None:
    """The MLflow 3 logged model a registered version was made from: its ``model_id`` (Unity Catalog), else the id in
    its ``models:/<model id>`` source (the open-source registry keeps only that); None for a version registered from
    a run's artifacts (before MLflow 3)."""
    found = getattr(version, "model_id", None)
    if found:
        return found
    source = getattr(version, "source", None) or ""
    match = re.fullmatch(r"models:/(m-[0-9a-f]+)/?", source)
    return match.group(1) if match else None


def model_file(local: Path) -> tuple[Path, str]:
    """The serialized estimator of a downloaded scikit-learn model folder and its serialization format."""
    from mlflow.models import Model

    conf = Model.load(str(local)).flavors["sklearn"]
    return local / conf["pickled_model"], conf.get("serialization_format") or "cloudpickle"


def is_registered(client, name: str) -> bool:
    try:
        client.get_registered_model(name)
        return True
    except Exception:  # noqa: BLE001 - RESOURCE_DOES_NOT_EXIST
        return False


def resolve_version(client, source: str):
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
        if found:  # search results may carry no tags (Unity Catalog): the version itself does
            found = [client.get_model_version(found[0].name, str(found[0].version))]
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
    mv = resolve_version(client, source)
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
        mv = resolve_version(MlflowClient(), uri)
        version, tags = f"{mv.name}/{mv.version}", dict(mv.tags or {})
    if "sklearn" not in info.flavors:
        return mlflow.pyfunc.load_model(uri), version, types
    if INDEX_TAG not in tags:  # not registered by manymodels: nothing recorded to check it against
        return mlflow.sklearn.load_model(uri), version, types
    with tempfile.TemporaryDirectory(prefix="manymodels-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        path, fmt = model_file(local)
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
