"""Atomic model-table storage.

A location is either a Unity Catalog / metastore table name (``catalog.schema.table``), written
as Delta with one overwrite (atomic by Delta's log), or a folder on a filesystem the driver can
see (local disk, ``/Volumes`` or ``/dbfs`` FUSE paths). A folder holds immutable versions under
``_versions/`` and a ``_CURRENT`` pointer replaced with ``os.replace`` only after a version is
completely written: a failed or killed run leaves the previous table readable and intact.

Writing and committing can be two steps (``write(..., commit=False)`` then ``commit_version``):
the training job writes the version, MLflow logs and registers it, and only then does the
pointer move, so a run killed while logging leaves both the table and the alias as they were.
A table name is written and committed in one Delta overwrite. ``prune`` deletes old versions of a folder.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

from manymodels.config import project_home
from manymodels.validation import InputError

POINTER = "_CURRENT"
_TABLE_NAME = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_`][\w`-]*){1,2}$")


class ModelTableNotFound(FileNotFoundError):
    pass


def default_location(name: str = "model_table") -> str:
    return str(project_home() / "tables" / name)


def is_table_name(location: str) -> bool:
    return "/" not in location and bool(_TABLE_NAME.match(location))


def _pointer(location: str) -> Path:
    return Path(location) / POINTER


def write(df, location: str, training_run_id: str, *, commit: bool = True) -> str:
    """Write ``df`` (triggering its computation) and commit it (unless ``commit=False``, folder locations only);
    return the written version's path or name."""
    if is_table_name(location):
        df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").saveAsTable(location)
        return location
    root = Path(location).resolve()
    safe_run = re.sub(r"[^\w.-]", "_", training_run_id)[:80]
    version = root / "_versions" / f"{time.strftime('%Y%m%dT%H%M%S')}-{safe_run}-{uuid.uuid4().hex[:8]}"
    df.write.mode("error").parquet(str(version))  # a fresh folder; "error" (not "errorifexists"): Spark Connect
    if commit:
        _move_pointer(root, version, training_run_id)
    return str(version)


def commit_version(location: str, version: str, training_run_id: str) -> None:
    """Make a version written with ``write(..., commit=False)`` the current table of ``location``."""
    if not is_table_name(location):
        _move_pointer(Path(location).resolve(), Path(version), training_run_id)


def _move_pointer(root: Path, version: Path, training_run_id: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{POINTER}.{uuid.uuid4().hex}"
    tmp.write_text(json.dumps({"version": str(version), "training_run_id": training_run_id,
                               "committed_at": time.time()}))
    os.replace(tmp, root / POINTER)  # atomic on POSIX: readers see the old or the new pointer


def versions(location: str) -> list[Path]:
    """The version folders of a folder location, oldest first (their names start with the write time)."""
    folder = Path(location).resolve() / "_versions"
    return sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.name) if folder.is_dir() else []


def prune(location: str, *, keep: int = 5, min_age_hours: float = 24.0, now: float | None = None) -> list[str]:
    """Delete the old version folders of a folder location; return the deleted paths.

    Every run writes a new version and the pointer only moves, so versions pile up: the committed ones of
    past runs, and those of runs that failed or were killed before they committed. Kept: the current
    version, the newest ``keep`` versions, and every version modified less than ``min_age_hours`` ago (a
    run may still be writing it, or logging to MLflow before it commits). A table-name location keeps its
    history in Delta (``VACUUM`` there) and is refused.
    """
    if is_table_name(location):
        raise InputError(f"prune: {location} is a table name; its old versions live in Delta's history. Fix: "
                         f"run VACUUM {location} there, or pass a folder location.")
    if keep < 0 or not min_age_hours >= 0:
        raise InputError(f"prune: expected keep >= 0 and min_age_hours >= 0, found keep={keep}, "
                         f"min_age_hours={min_age_hours}. Fix: pass non-negative values.")
    found = versions(location)
    try:
        protected = {Path(current(location)["version"]).resolve()}
    except ModelTableNotFound:
        protected = set()
    protected.update(p.resolve() for p in found[len(found) - keep:] if keep)
    cutoff = (time.time() if now is None else now) - min_age_hours * 3600
    deleted = []
    for path in found:
        try:
            if path.resolve() in protected or path.stat().st_mtime > cutoff:
                continue
            shutil.rmtree(path)
        except FileNotFoundError:  # another prune got there first
            continue
        deleted.append(str(path))
    return deleted


def current(location: str) -> dict:
    """The committed pointer of a folder location: ``{version, training_run_id, committed_at}``."""
    pointer = _pointer(location)
    if not pointer.exists():
        raise ModelTableNotFound(f"No committed model table at {location}: train first "
                                 "(manymodels train ...) or check the location.")
    return json.loads(pointer.read_text())


def read(spark, location: str):
    """The committed model table as a Spark DataFrame."""
    return read_version(spark, location if is_table_name(location) else current(location)["version"])


def read_version(spark, version: str):
    """One written version (a table name or a version folder) as a Spark DataFrame."""
    return spark.read.table(version) if is_table_name(version) else spark.read.parquet(version)


def is_local_version(version: str) -> bool:
    """A version folder the driver can read directly (no Spark job needed)."""
    return not is_table_name(version) and Path(version).is_dir()


def read_columns(spark, version: str, columns: list[str]):
    """Some small columns of a version as pandas (no blobs!); columns the version lacks come back as nulls."""
    import pandas as pd

    if is_local_version(version):
        import pyarrow.dataset as ds

        data = ds.dataset(version, format="parquet")
        have = [c for c in columns if c in data.schema.names]
        frame = data.to_table(columns=have).to_pandas()
    else:
        df = read_version(spark, version)
        have = [c for c in columns if c in df.columns]
        frame = df.select(*have).toPandas()
    for c in columns:
        if c not in frame:
            frame[c] = pd.Series([None] * len(frame), dtype="object")
    return frame[columns]


def value_counts(spark, version: str, column: str) -> dict:
    """Counts of each value of ``column`` in a committed version (a local folder is read with pyarrow, no job)."""
    if is_local_version(version):
        import pyarrow.dataset as ds

        values = ds.dataset(version, format="parquet").to_table(columns=[column]).column(column).to_pandas()
        return values.value_counts().to_dict()
    return {r[column]: r["count"] for r in read_version(spark, version).groupBy(column).count().collect()}
