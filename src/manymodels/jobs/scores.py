"""The scoring job's output: where scores may be written (output roots, the marker of a previous scores folder), the
columns each row gets (the registered version's run ids, ``scored_at``, ``score_date``), and the write that replaces
one date's partition and nothing else (a Delta table, another table, or a Parquet folder)."""
from __future__ import annotations

import datetime
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from manymodels import tracking
from manymodels.errors import InputError
from manymodels.settings import OUTPUT_ROOT_ENV, on_databricks, project_home
from manymodels.spark.training import session_conf
from manymodels.storage.model_table import table_format


@dataclass
class Scored:
    """What ``batch_score`` wrote: ``rows`` and ``statuses`` count the rows of ``score_date`` in ``output``."""

    output: str
    model_version: str
    rows: int
    statuses: dict
    seconds: float
    score_date: str = ""
    training_run_id: str | None = None  # of the registered version (its manymodels.training_run_id tag)
    mlflow_run_id: str | None = None  # the MLflow run that logged the registered version

    def summary(self) -> str:
        run = f" (training run {self.training_run_id})" if self.training_run_id else ""
        day = f" [score_date={self.score_date}]" if self.score_date else ""
        return (f"scored {self.rows:,} rows with {self.model_version}{run} in {self.seconds:.1f} s -> "
                f"{self.output}{day}; status: {self.statuses}")


# Written into a scores folder after a successful write; only a folder holding it (or an empty one) is overwritten.
SCORES_MARKER = "_MANYMODELS_SCORES"


def output_roots(model_name: str = "") -> tuple[Path, ...]:
    """The folders under which ``output_table`` may be a path: ``$MANYMODELS_OUTPUT_ROOT`` (comma-separated) when
    set; else on Databricks ``/Volumes/<catalog>/<schema>`` of a Unity Catalog ``model_name`` (none for another
    name: table names only); else the project's ``scores`` folder."""
    configured = [r.strip() for r in os.environ.get(OUTPUT_ROOT_ENV, "").split(",") if r.strip()]
    if configured:
        return tuple(Path(os.path.abspath(r)) for r in configured)
    if on_databricks():
        parts = model_name.split(".")
        return (Path("/Volumes", parts[0], parts[1]),) if len(parts) == 3 and all(parts) else ()
    return (project_home() / "scores",)


def check_output(output: str, *, model_name: str = "", input_path: str = "", roots=None, spark=None) -> str:
    """Decide on the driver, before anything is read or scored, that ``output`` may be written; returns the
    table name, or the path resolved (``..`` and symbolic links followed).

    Scores are filed by date: the output is partitioned by ``score_date`` and a run replaces its own date only.
    A table name (no ``/``) is accepted; with ``spark``, an existing table must already be partitioned by
    ``score_date``. A path must lie strictly inside one of ``roots`` (default: ``output_roots(model_name)``), be a
    local or FUSE path (``/Volumes/...``; URIs such as ``s3://`` cannot be checked), not hold the input, and either
    not exist, be an empty folder, or hold the ``_MANYMODELS_SCORES`` marker of a previous scores output (at its
    root, beside its ``score_date=YYYY-MM-DD`` folders). Anything else, including scores an older version wrote
    unpartitioned, is an ``InputError`` naming the output and the fix."""
    if "/" not in output:
        if spark is not None:
            check_scores_table(spark, output)
        return output
    if "://" in output or output.split("/", 1)[0].endswith(":"):
        raise InputError(f"output_table={output!r} is a URI: the job writes scores only to a table name or a folder "
                         "it can check on the driver (a local path, or /Volumes/<catalog>/<schema>/<volume>/... on "
                         "Databricks). Fix: pass a table name or such a folder.")
    path = Path(output).resolve()
    roots = output_roots(model_name) if roots is None else tuple(Path(r) for r in roots)
    resolved_roots = [Path(r).resolve() for r in roots]
    if not any(path != root and path.is_relative_to(root) for root in resolved_roots):
        allowed = ", ".join(str(r) for r in resolved_roots) or "none (table names only)"
        raise InputError(f"output_table={output!r} ({path}) is not inside an output root (roots: {allowed}): the "
                         "scoring job overwrites its output, so it writes folders only where it is configured to. "
                         f"Fix: a table name, a folder inside a root, or set {OUTPUT_ROOT_ENV} (comma-separated "
                         "folders) where the job is configured.")
    if str(path).startswith("/Volumes/") and not Path("/Volumes").is_dir():
        raise InputError(f"output_table={output!r}: /Volumes is not mounted on this machine, so whether the "
                         "folder holds a previous scores output cannot be checked. Fix: score on Databricks, or "
                         "write a table.")
    if input_path and "/" in input_path and "://" not in input_path:
        source = Path(input_path).resolve()
        if source == path or source.is_relative_to(path) or path.is_relative_to(source):
            raise InputError(f"output_table={output!r} overlaps input_path={input_path!r}: overwriting it would "
                             "delete the rows being scored. Fix: write the scores to another folder.")
    if path.is_dir() and any(path.iterdir()) and not (path / SCORES_MARKER).is_file():
        shown = ", ".join(sorted(p.name for p in path.iterdir())[:5])
        raise InputError(f"output_table={output!r}: {path} exists and is not a previous scores output (no "
                         f"{SCORES_MARKER} marker; it holds {shown}), so it is not overwritten. Fix: choose a new "
                         "folder, or delete this one yourself if it is an interrupted scores output.")
    if path.exists() and not path.is_dir():
        raise InputError(f"output_table={output!r}: {path} is a file, not a scores folder; it is not overwritten. "
                         "Fix: choose a new folder.")
    if path.is_dir() and (path / SCORES_MARKER).is_file():
        _check_dated_folder(output, path)
    return str(path)


SCORE_DATE = "score_date"  # the partition column of a scores output: one folder (or table partition) per date
# the columns batch_score adds to score_per_group's output, after model_version; score_date last (the partition)
SCORE_COLUMNS = ("training_run_id", "mlflow_run_id", "scored_at", SCORE_DATE)


def _undated(output: str, what: str, fix: str) -> InputError:
    return InputError(f"output_table={output!r} {what}, not only {SCORE_DATE} partitions: scores written before "
                      "scores were filed by date (an older manymodels overwrote the whole output), or other data. "
                      "Writing dated scores into it would mix the two, so it is left as it is. Fix: pass a new "
                      f"output_table, or {fix}.")


def _check_dated_folder(output: str, path: Path) -> None:
    """A marked scores folder must hold only ``score_date=...`` partitions (and files starting with _ or .)."""
    try:
        marker = json.loads((path / SCORES_MARKER).read_text())
    except (OSError, ValueError):
        marker = {}
    data = [p.name for p in path.iterdir() if not p.name.startswith(("_", "."))]
    loose = [name for name in data if not (name.startswith(f"{SCORE_DATE}=") and (path / name).is_dir())]
    if loose or (data and marker.get("partitioned_by") != SCORE_DATE):
        shown = ", ".join(sorted(loose or data)[:3])
        raise _undated(output, f"({path}) holds {shown}",
                       f"move the old scores away first (for example: mv {path} {path}_undated)")


def _quoted_table(name: str) -> str:
    return ".".join(f"`{p.strip('`').replace('`', '``')}`" for p in name.split("."))


def check_scores_table(spark, name: str) -> dict | None:
    """``{column: (Spark type, is partition column)}`` of an existing scores table (None: no such table yet);
    an ``InputError`` when it is not partitioned by ``score_date``, such as scores an older version wrote."""
    if not spark.catalog.tableExists(_quoted_table(name)):
        return None
    columns = {c.name: (c.dataType, bool(c.isPartition)) for c in spark.catalog.listColumns(_quoted_table(name))}
    if SCORE_DATE not in columns or not columns[SCORE_DATE][1] or sum(p for _, p in columns.values()) != 1:
        parts = [c for c, (_, p) in columns.items() if p]
        raise _undated(name, f"is partitioned by {parts or 'nothing'}",
                       f"rename the old table first (ALTER TABLE {_quoted_table(name)} RENAME TO <name>_undated)")
    return columns


def write_scores_marker(path: str, *, model_version: str, rows: int, score_date: str | None = None) -> Path:
    """Mark ``path`` as a dated scores output the next run may write a date into (JSON: the layout, the last
    run's model version, date and rows, and the time written). Replaced atomically."""
    marker = Path(path) / SCORES_MARKER
    tmp = marker.with_name(f".{SCORES_MARKER}.{os.getpid()}")
    tmp.write_text(json.dumps({"partitioned_by": SCORE_DATE, "model_version": model_version, "rows": rows,
                               "score_date": score_date,
                               "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
    os.replace(tmp, marker)
    return marker


def score_day(text: str = "") -> str:
    """``YYYY-MM-DD`` of ``text``, or today's date in UTC when it is empty."""
    text = str(text or "").strip()
    if not text:
        return datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    try:
        return datetime.date.fromisoformat(text).isoformat()
    except ValueError:
        raise InputError(f"score_date={text!r}: expected a date as YYYY-MM-DD (or empty: today, UTC). Fix: e.g. "
                         "score_date=2026-12-01.") from None


def registered_version(uri: str):
    """The registry's model version ``uri`` names (``models:/name@alias``): ``name``, ``version``, ``run_id``,
    ``tags``; an ``InputError`` naming it when there is none."""
    from mlflow import MlflowClient

    return tracking.resolve_version(MlflowClient(), uri)


def with_score_columns(scored, *, day: str, scored_at, training_run_id, mlflow_run_id):
    """``scored`` plus ``SCORE_COLUMNS`` as literals; a key or pass-through column of the same name is refused."""
    from pyspark.sql import functions as F

    clash = [c for c in scored.columns if c in SCORE_COLUMNS]
    if clash:
        raise InputError(f"The scores would have two columns named {clash}: the input's key or pass-through "
                         f"column(s) and the column(s) the scoring job adds ({', '.join(SCORE_COLUMNS)}). Fix: "
                         "leave them out of passthrough_cols, or rename them in the input.")
    return (scored.withColumn("training_run_id", F.lit(training_run_id).cast("string"))
            .withColumn("mlflow_run_id", F.lit(mlflow_run_id).cast("string"))
            .withColumn("scored_at", F.lit(scored_at).cast("timestamp"))
            .withColumn(SCORE_DATE, F.lit(datetime.date.fromisoformat(day))))


PARTITION_OVERWRITE = "spark.sql.sources.partitionOverwriteMode"


def write_scores(spark, scored, output: str, day: str) -> None:
    """Replace ``day``'s partition of ``output`` (a folder checked by ``check_output``, or a table name) with
    ``scored``, leaving every other date as it is."""
    if "/" in output:
        _check_same_columns(output, spark.read.parquet(output).columns if _has_dates(output) else None, scored)
        # dynamic: only the partitions this write produces are replaced (the writer option wins over the session's)
        with session_conf(spark, {PARTITION_OVERWRITE: "dynamic"}):
            (scored.write.mode("overwrite").option("partitionOverwriteMode", "dynamic")
             .partitionBy(SCORE_DATE).parquet(output))
        return
    columns = check_scores_table(spark, output)
    if columns is None:  # first run: created partitioned by date (a concurrent creator makes this one fail)
        scored.write.format(table_format()).partitionBy(SCORE_DATE).saveAsTable(output)
        return
    _check_same_columns(output, list(columns), scored)
    ordered = scored.select(*[f"`{c}`" for c in columns])
    if _provider(spark, output) == "delta":
        (ordered.write.format("delta").mode("overwrite").option("replaceWhere", f"{SCORE_DATE} = '{day}'")
         .saveAsTable(output))
        return
    view = f"_mm_scores_{uuid.uuid4().hex}"
    ordered.drop(SCORE_DATE).createOrReplaceTempView(view)
    try:  # a static partition: replaced even when no row is scored, and no other partition can be touched
        selected = ", ".join(f"`{c}`" for c in columns if c != SCORE_DATE)
        spark.sql(f"INSERT OVERWRITE TABLE {_quoted_table(output)} PARTITION ({SCORE_DATE} = DATE'{day}') "
                  f"SELECT {selected} FROM {view}")
    finally:
        spark.catalog.dropTempView(view)


def _has_dates(output: str) -> bool:
    path = Path(output)
    return path.is_dir() and any(p.name.startswith(f"{SCORE_DATE}=") for p in path.iterdir())


def _provider(spark, name: str) -> str:
    for row in spark.sql(f"DESCRIBE TABLE EXTENDED {_quoted_table(name)}").collect():
        if str(row[0]).strip().lower() == "provider":
            return str(row[1]).strip().lower()
    return ""


def _check_same_columns(output: str, existing, scored) -> None:
    """The earlier dates' columns must be these scores' columns (the same model task and pass-through columns)."""
    if existing is None:
        return
    lacking = [c for c in existing if c not in scored.columns]
    extra = [c for c in scored.columns if c not in existing]
    if lacking or extra:
        raise InputError(f"output_table={output!r} holds scores with other columns than these: they lack "
                         f"{lacking or 'none'} and add {extra or 'none'} (another model task, key or "
                         "passthrough_cols). Fix: score with the same passthrough_cols and model, or pass a new "
                         "output_table.")


def dated_counts(spark, output: str, day: str, scored_at) -> dict:
    """Rows per status of ``day`` in ``output`` that this run (``scored_at``) wrote. A folder's dynamic overwrite
    of an empty result writes no partition, so the date's earlier rows are still there: they are removed."""
    from pyspark.sql import functions as F

    frame = spark.read.parquet(output) if "/" in output else spark.read.table(_quoted_table(output))
    ours = (F.col("scored_at") == F.lit(scored_at).cast("timestamp")).alias("ours")
    rows = (frame.where(F.col(SCORE_DATE) == F.lit(datetime.date.fromisoformat(day)))
            .groupBy("status", ours).count().collect())
    counts = {r["status"]: int(r["count"]) for r in rows if r["ours"]}
    if "/" in output and not counts and rows:
        shutil.rmtree(Path(output) / f"{SCORE_DATE}={day}")
    return counts
