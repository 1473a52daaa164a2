"""Atomic model-table storage.

A location is either a folder on a filesystem the driver can see (local disk, ``/Volumes`` or ``/dbfs``
FUSE paths) or a Unity Catalog / metastore table name (``catalog.schema.table`` or ``schema.table``).
Both keep immutable versions and move a pointer only after a version is completely written, so a failed
or killed run leaves the previous table readable and intact:

- A folder holds versions under ``_versions/`` and a ``_CURRENT`` JSON pointer (the version's path
  relative to the folder, so a copied or moved location reads its own versions) replaced with
  ``os.replace``.
- A table name ``cat.sch.t`` is a *view*; each version is a new table ``cat.sch.t__mm_v<UTC time>_<hex>``
  written in ``table_format()`` (Delta on Databricks, Parquet elsewhere), and a commit points the view at
  it (``ALTER VIEW ... AS``: one catalog update, grants kept). The version, training run, commit time and
  registered model version are properties of the view (``manymodels.*``) and of the version table.

Writing and committing can be two steps (``write(..., commit=False)`` then ``commit_version``): the
training job writes the version, MLflow logs and registers it, and only then does the pointer move, so a
run killed while logging leaves both the table and the alias as they were. ``prune`` deletes old versions
(never the current one) of either kind.
"""
from __future__ import annotations

import calendar
import json
import math
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import pandas as pd

from manymodels.errors import InputError
from manymodels.settings import DATABRICKS_CONNECT_ENV, TABLE_FORMAT_ENV, on_databricks, project_home

POINTER = "_CURRENT"
VERSIONS = "_versions"
_TABLE_NAME = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_`][\w`-]*){1,2}$")

TABLE_FORMATS = ("delta", "parquet")
VERSION_MARK = "__mm_v"  # <table>__mm_v<YYYYmmdd>t<HHMMSS>_<8 hex>: catalogs store names in lower case
_STAMP = "%Y%m%dt%H%M%S"
PROPERTY = "manymodels."  # view properties: manymodels.version, .training_run_id, .committed_at, .registered


class ModelTableNotFound(FileNotFoundError):
    pass


class CorruptPointer(InputError):
    """The pointer of a location (a folder's ``_CURRENT``, a table name's view) cannot be read."""


class PruneRefused(InputError):
    """Pruning could delete the table readers use: nothing was deleted."""


def default_location(name: str = "model_table") -> str:
    return str(project_home() / "tables" / name)


def is_table_name(location: str) -> bool:
    return "/" not in location and bool(_TABLE_NAME.match(location))


def table_format() -> str:
    """The format of version tables: ``$MANYMODELS_TABLE_FORMAT``, else Delta on Databricks (a cluster, or
    Databricks Connect: Unity Catalog's managed tables are Delta), else Parquet (Delta's jars are not here)."""
    found = os.environ.get(TABLE_FORMAT_ENV, "").strip()
    if not found:
        connect = any(os.environ.get(name) for name in DATABRICKS_CONNECT_ENV)
        return "delta" if on_databricks() or connect else "parquet"
    if found.lower() not in TABLE_FORMATS:
        raise InputError(f"{TABLE_FORMAT_ENV}={found!r}: expected one of {', '.join(TABLE_FORMATS)}. Fix: set it "
                         f"to delta (Databricks) or parquet (a local metastore), or unset it for the default.")
    return found.lower()


# ---------------------------------------------------------------------------------------------- writing


def write(df, location: str, training_run_id: str, *, commit: bool = True) -> str:
    """Write ``df`` (triggering its computation) as a new version of ``location`` and, unless
    ``commit=False``, make it current; return the version (a folder's absolute path, or a full table name)."""
    if is_table_name(location):
        _properties({"training_run_id": training_run_id})  # refused now, not at the commit after MLflow logging
        version = _new_version_table(location)
        df.write.format(table_format()).mode("error").saveAsTable(_quoted(version))  # a fresh table
        if commit:
            commit_version(location, version, training_run_id, spark=df.sparkSession)
        return version
    root = Path(location).resolve()
    safe_run = re.sub(r"[^\w.-]", "_", training_run_id)[:80]
    version = root / VERSIONS / f"{time.strftime('%Y%m%dT%H%M%S')}-{safe_run}-{uuid.uuid4().hex[:8]}"
    df.write.mode("error").parquet(str(version))  # a fresh folder; "error" (not "errorifexists"): Spark Connect
    if commit:
        _move_pointer(root, version, training_run_id, None)
    return str(version)


def commit_version(location: str, version: str, training_run_id: str, *, spark=None,
                   registered: str | None = None) -> None:
    """Make a version written with ``write(..., commit=False)`` the current table of ``location``
    (idempotent). ``registered`` (e.g. ``"models_name/3"``) names the registered model version made of it.
    A table-name location needs ``spark``."""
    if is_table_name(location):
        _commit_view(_need_spark(spark, "commit_version", location), location, version, training_run_id, registered)
    else:
        _move_pointer(Path(location).resolve(), Path(version), training_run_id, registered)


def _move_pointer(root: Path, version: Path, training_run_id: str, registered: str | None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    version = version.resolve() if version.is_absolute() else (root / version).resolve()
    # Relative to the location when the version is one of its own: a copied or moved location reads its copy.
    stored = f"{VERSIONS}/{version.name}" if version.parent == root / VERSIONS else str(version)
    tmp = root / f".{POINTER}.{uuid.uuid4().hex}"
    tmp.write_text(json.dumps({"version": stored, "training_run_id": training_run_id,
                               "committed_at": time.time(), "registered": registered}))
    os.replace(tmp, root / POINTER)  # atomic on POSIX: readers see the old or the new pointer


# ---------------------------------------------------------------------------------------------- reading


def current(location: str, spark=None) -> dict:
    """The committed pointer: ``{version, training_run_id, committed_at, registered}``; ``version`` is an
    absolute folder path or a full table name, ``registered`` None when not recorded.

    Raises ``ModelTableNotFound`` when nothing was committed, ``CorruptPointer`` when the pointer is unreadable.
    A table name needs ``spark``; a plain table left by an older manymodels (one overwrite, no view) is its
    own current version, with no run recorded.
    """
    if is_table_name(location):
        return _current_view(_need_spark(spark, "current", location), location)
    root = Path(location).resolve()
    pointer = root / POINTER
    try:
        text = pointer.read_text()
    except FileNotFoundError:
        raise ModelTableNotFound(f"No committed model table at {location}: train first "
                                 "(manymodels train ...) or check the location.") from None
    try:
        found = json.loads(text)
    except ValueError:
        found = None
    if not isinstance(found, dict) or not isinstance(found.get("version"), str) or not found["version"]:
        raise CorruptPointer(
            f"The pointer {pointer} is unreadable: expected JSON with a 'version' (a folder under {VERSIONS}/), "
            f"found {text[:200]!r}. Fix: write the name of the version to serve into it, e.g. "
            f'{{"version": "{VERSIONS}/<name>"}} (see the folders in {root / VERSIONS}), or retrain.')
    version = Path(found["version"])  # absolute when written by an older manymodels
    return {"version": str(version if version.is_absolute() else root / version),
            "training_run_id": found.get("training_run_id"), "committed_at": found.get("committed_at"),
            "registered": found.get("registered")}


def read(spark, location: str):
    """The committed model table as a Spark DataFrame (its current version, read directly)."""
    return read_version(spark, current(location, spark)["version"])


def read_version(spark, version: str):
    """One written version (a table name or a version folder) as a Spark DataFrame."""
    return spark.read.table(_quoted(version)) if is_table_name(version) else spark.read.parquet(version)


def versions(location: str, *, spark=None) -> list:
    """The versions of a location, oldest first (their names start with the write time): a folder's version
    folders (Paths), or a table name's version tables (full names; needs ``spark``)."""
    if is_table_name(location):
        return [name for name, _ in _version_tables(_need_spark(spark, "versions", location), location)]
    folder = Path(location).resolve() / VERSIONS
    return sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.name) if folder.is_dir() else []


# ---------------------------------------------------------------------------------------------- pruning


def prune(location: str, *, keep: int = 5, min_age_hours: float = 24.0, now: float | None = None,
          spark=None) -> list[str]:
    """Delete the old versions of a location; return the deleted ones (paths or table names).

    Every run writes a new version and the pointer only moves, so versions pile up: the committed ones of
    past runs, and those of runs that failed or were killed before they committed. Kept: the current
    version, the newest ``keep`` versions, and every version younger than ``min_age_hours`` (a run may
    still be writing it, or logging to MLflow before it commits): a folder's age is its modification time,
    a version table's the UTC time in its name. Refused (``PruneRefused``, nothing deleted) when versions
    exist but no pointer names the current one; ``CorruptPointer`` when the pointer is unreadable. A table
    name needs ``spark``.
    """
    if keep < 0 or not min_age_hours >= 0:
        raise InputError(f"prune: expected keep >= 0 and min_age_hours >= 0, found keep={keep}, "
                         f"min_age_hours={min_age_hours}. Fix: pass non-negative values.")
    cutoff = (time.time() if now is None else now) - min_age_hours * 3600
    if is_table_name(location):
        return _prune_tables(_need_spark(spark, "prune", location), location, keep, cutoff)
    found = versions(location)
    if not found:
        return []
    try:
        named = Path(current(location)["version"]).resolve()
    except ModelTableNotFound:
        raise PruneRefused(
            f"prune: {location} has {len(found)} version(s) but no {POINTER} pointer, so which one readers use "
            f"is unknown; nothing was deleted. Fix: commit one (train again, or write "
            f'{{"version": "{VERSIONS}/<name>"}} into {Path(location) / POINTER}), then prune.') from None
    if not named.is_dir():
        raise CorruptPointer(f"prune: {Path(location) / POINTER} names {named}, which does not exist; nothing was "
                             f"deleted. Fix: point it at an existing version (see {Path(location) / VERSIONS}) "
                             "or retrain, then prune.")
    protected = {named, *(p.resolve() for p in found[len(found) - keep:] if keep)}
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


def _prune_tables(spark, location: str, keep: int, cutoff: float) -> list[str]:
    found = _version_tables(spark, location)
    if not found:
        return []
    if _kind(spark, location) != "VIEW":
        raise PruneRefused(
            f"prune: {location} has {len(found)} version table(s) but is not a manymodels view, so which one "
            f"readers use is unknown; nothing was deleted. Fix: commit one (train again, or "
            f"model_table.commit_version), then prune.")
    protected = {name.lower() for name in _pointed(spark, location)}
    protected.update(name.lower() for name, _ in found[len(found) - keep:] if keep)
    deleted = []
    for name, written in found:
        if name.lower() in protected or written > cutoff:
            continue
        spark.sql(f"DROP TABLE IF EXISTS {_quoted(name)}").collect()
        deleted.append(name)
    return deleted


# ---------------------------------------------------------------------------------------------- columns


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


# ---------------------------------------------------------------------------------------------- table names
#
# Why a view over immutable tables: one overwrite of the table commits before MLflow logging and
# registration, so a failed logging left a new table behind an old alias; and only Delta makes an overwrite
# atomic. Each version is a new table (never overwritten, never read while written), and a commit is a
# metadata change of the view. A view is metadata only: "ALTER VIEW and DROP VIEW only change metadata"
# (Databricks, CREATE VIEW: https://docs.databricks.com/sql/language-manual/sql-ref-syntax-ddl-create-view.html).
#
# An existing view is moved with ALTER VIEW ... AS, not CREATE OR REPLACE VIEW: open-source Spark runs
# CREATE OR REPLACE on its session catalog (the Hive metastore) as a drop then a create, so a reader in
# between finds no table, while ALTER VIEW ... AS is one catalog update (SessionCatalog.alterTable); and
# "Replacing an existing view does not preserve privileges granted on the original view. Use ALTER VIEW to
# preserve privileges" (same Databricks page): grants to the view survive every commit. ALTER VIEW AS keeps
# the old properties, so they are set by a second statement right after; between the two (or after a crash
# there, or when two runs commit at once) the view's properties lag its definition, and ``current`` trusts
# the definition: the version is the table the view's text reads (DESCRIBE TABLE EXTENDED), and the run,
# time and registered version come from that version table's own properties, set before it became visible.


def _parts(name: str) -> list[str]:
    return [p.strip("`") for p in name.split(".")]


def _quoted(name: str) -> str:
    return ".".join(f"`{p.replace('`', '``')}`" for p in _parts(name))


def _base(location: str) -> str:
    """The version tables' common prefix, from the location's last part: lower case, ``[a-z0-9_]`` only."""
    base = re.sub(r"[^a-z0-9_]", "_", _parts(location)[-1].lower())[:180]
    return base if re.match(r"[a-z_]", base) else f"_{base}"


def _version_pattern(location: str) -> re.Pattern:
    return re.compile(rf"(?<![a-z0-9_])({re.escape(_base(location))}{VERSION_MARK}(\d{{8}}t\d{{6}})_[0-9a-f]{{8}})"
                      r"(?![a-z0-9_])", re.IGNORECASE)


def _new_version_table(location: str) -> str:
    """``<schema>.<base>__mm_v<UTC time>_<8 hex>``: 5 hex digits of microseconds, then 3 random ones, so the
    names of one location sort in write order even within a second."""
    now = time.time()
    stamp = time.strftime(_STAMP, time.gmtime(now))
    tail = f"{int(now % 1 * 1e6):05x}{uuid.uuid4().hex[:3]}"
    return f"{location.rsplit('.', 1)[0]}.{_base(location)}{VERSION_MARK}{stamp}_{tail}"


def _need_spark(spark, what: str, location: str):
    if spark is None:
        raise InputError(f"{what}: {location} is a table name, which needs a Spark session, found spark=None. "
                         f"Fix: pass spark=<the SparkSession>.")
    return spark


def _kind(spark, name: str) -> str | None:
    """``"VIEW"``, ``"TABLE"`` (any other table type) or None when ``name`` does not exist."""
    if not spark.catalog.tableExists(_quoted(name)):
        return None
    return "VIEW" if spark.catalog.getTable(_quoted(name)).tableType.upper() == "VIEW" else "TABLE"


def _version_tables(spark, location: str) -> list[tuple[str, float]]:
    """``(full name, UTC write time)`` of the location's version tables, oldest first."""
    prefix = location.rsplit(".", 1)[0]
    pattern = _version_pattern(location)
    found = []
    for row in spark.sql(f"SHOW TABLES IN {_quoted(prefix)}").collect():
        match = pattern.fullmatch(row["tableName"])
        if match and not row["isTemporary"]:
            written = calendar.timegm(time.strptime(match.group(2).lower(), _STAMP))
            found.append((f"{prefix}.{match.group(1).lower()}", float(written)))
    return sorted(found, key=lambda item: item[0].rsplit(".", 1)[1])


def _properties(values: dict[str, str]) -> str:
    for key, value in values.items():
        if "'" in value or "\\" in value:
            raise InputError(f"{PROPERTY}{key}={value!r}: a view property cannot hold a quote or a backslash. "
                             "Fix: use a training run id / model name without them.")
    return ", ".join(f"'{PROPERTY}{key}'='{value}'" for key, value in values.items())


def _commit_view(spark, location: str, version: str, training_run_id: str, registered: str | None) -> None:
    table = version.rsplit(".", 1)[-1] if is_table_name(version) else ""
    same_schema = [p.lower() for p in _parts(version)[:-1]] == [p.lower() for p in _parts(location)[:-1]]
    if not same_schema or not _version_pattern(location).fullmatch(table.strip("`")):
        raise InputError(f"commit_version: {version!r} is not a version table of {location}: expected "
                         f"{location.rsplit('.', 1)[0]}.{_base(location)}{VERSION_MARK}<time>_<hex>, as "
                         "model_table.write returns. Fix: pass the version write returned.")
    props = _properties({"version": version, "training_run_id": training_run_id or "",
                         "committed_at": repr(time.time()), "registered": registered or ""})
    if _kind(spark, version) is None:
        raise InputError(f"commit_version: the version table {version} does not exist (pruned or never written). "
                         "Fix: commit a version that exists (model_table.versions) or retrain.")
    # The version table carries the same properties (set before it becomes visible): ``current`` reads them
    # when the view's own properties lag its definition.
    spark.sql(f"ALTER TABLE {_quoted(version)} SET TBLPROPERTIES ({props})").collect()
    kind = _kind(spark, location)
    if kind == "VIEW":
        _pointed(spark, location)  # refuses a view manymodels did not make
        spark.sql(f"ALTER VIEW {_quoted(location)} AS SELECT * FROM {_quoted(version)}").collect()
        spark.sql(f"ALTER VIEW {_quoted(location)} SET TBLPROPERTIES ({props})").collect()
        return
    if kind == "TABLE":
        # A plain table written by an older manymodels (one overwrite): it becomes a version table, then the
        # view takes its name. The one non-atomic moment of this design is between these two statements:
        # readers of the location find no table, and a crash there leaves none (the old rows are safe in the
        # renamed table; current() says ModelTableNotFound, prune refuses); committing again repairs it.
        _rename(spark, location, _new_version_table(location))
    spark.sql(f"CREATE VIEW {_quoted(location)} TBLPROPERTIES ({props}) "
              f"AS SELECT * FROM {_quoted(version)}").collect()


def _rename(spark, old: str, new: str) -> None:
    try:
        spark.sql(f"ALTER TABLE {_quoted(old)} RENAME TO {_quoted(new)}").collect()
    except Exception as exc:  # noqa: BLE001 - open-source Spark's session catalog takes schema.table only
        if "IDENTIFIER_TOO_MANY_NAME_PARTS" not in str(exc) or len(_parts(new)) < 3:
            raise
        spark.sql(f"ALTER TABLE {_quoted(old)} RENAME TO {_quoted('.'.join(_parts(new)[-2:]))}").collect()


def _view_text_version(spark, location: str) -> str | None:
    """The version table the view's definition reads (from DESCRIBE TABLE EXTENDED), or None if not found."""
    pattern = _version_pattern(location)
    for row in spark.sql(f"DESCRIBE TABLE EXTENDED {_quoted(location)}").collect():
        if str(row[0]).strip().lower() in ("view text", "view original text"):
            match = pattern.search(str(row[1]))
            if match:
                return f"{location.rsplit('.', 1)[0]}.{match.group(1).lower()}"
    return None


def _table_properties(spark, location: str) -> dict[str, str]:
    rows = spark.sql(f"SHOW TBLPROPERTIES {_quoted(location)}").collect()
    return {r["key"][len(PROPERTY):]: r["value"] for r in rows if r["key"].startswith(PROPERTY)}


def _pointed(spark, location: str) -> set[str]:
    """The versions a view names: its definition's and its properties' (the same but right after a crash)."""
    named = {n for n in (_view_text_version(spark, location), _table_properties(spark, location).get("version"))
             if n}
    if not named:
        raise CorruptPointer(f"{location} is a view manymodels did not make: it has no {PROPERTY}version property "
                             f"and reads no {_base(location)}{VERSION_MARK}... table. Fix: pass another location, "
                             f"or drop the view (DROP VIEW {location}) if nothing else uses it.")
    return named


def _current_view(spark, location: str) -> dict:
    kind = _kind(spark, location)
    if kind is None:
        raise ModelTableNotFound(f"No committed model table at {location}: train first "
                                 "(manymodels train ...) or check the location.")
    if kind == "TABLE":  # written by an older manymodels; the first commit makes it a version table
        return {"version": location, "training_run_id": None, "committed_at": None, "registered": None}
    props = _table_properties(spark, location)
    text = _view_text_version(spark, location)
    if not text and not props.get("version"):
        _pointed(spark, location)  # raises CorruptPointer
    if text and text.lower() != props.get("version", "").lower():  # the view's properties lag its definition
        props = {**_table_properties(spark, text), "version": text}
    committed = props.get("committed_at")
    try:
        committed = float(committed) if committed else None
    except ValueError:
        committed = None
    if committed is not None and not math.isfinite(committed):
        committed = None
    return {"version": props["version"], "training_run_id": props.get("training_run_id") or None,
            "committed_at": committed, "registered": props.get("registered") or None}


BATCH_ROWS = 2048


READ_BUFFER_BYTES = 1 << 20  # Parquet read buffer of iter_model_table (streams pages, not whole row groups)


def iter_model_table(spark, table, columns: list[str]):
    """The committed model table as pandas batches, never whole: bounded driver memory.

    A folder version is read straight from its Parquet files; a table goes through Spark
    partition by partition.
    """
    version = table.version
    if is_local_version(version):
        import pyarrow.dataset as ds
        import pyarrow.parquet as pq

        # One file at a time through a buffered stream: a Dataset scan (or a plain read) decodes whole row
        # groups, several files ahead, and Spark writes one row group per ~128 MB: memory grew with the table.
        for path in ds.dataset(version, format="parquet").files:
            with pq.ParquetFile(path, buffer_size=READ_BUFFER_BYTES, pre_buffer=False) as reader:
                for batch in reader.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                    yield batch.to_pandas()
        return
    rows = []
    for row in table.read(spark).select(*columns).toLocalIterator(prefetchPartitions=True):
        rows.append(row.asDict())
        if len(rows) == BATCH_ROWS:
            yield pd.DataFrame(rows, columns=columns)
            rows = []
    if rows:
        yield pd.DataFrame(rows, columns=columns)
