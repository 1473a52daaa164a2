"""Job steps shared by the CLI, the notebooks and the bundle's tasks: prepare, train + register, score.

Each step takes plain arguments and returns a small result object, so notebooks stay thin and
everything they do is reachable from tests.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from manymodels import api, tracking
from manymodels.core import model_cache
from manymodels.core.checks import check_estimator, check_path, parse_bool
from manymodels.core.estimators import load_estimator
from manymodels.core.group_params import tuned_overrides
from manymodels.core.panel import feature_names, make_panel, write_gzip_per_group, write_parquet
from manymodels.core.spec import PanelSpec
from manymodels.errors import InputError
from manymodels.locations import Locations
from manymodels.settings import DEFAULT_VOLUME, OUTPUT_ROOT_ENV, ROW_BOUNDED_ARROW, on_databricks, project_home
from manymodels.spark import inputs
from manymodels.spark.inputs import read_any
from manymodels.spark.progress import Progress
from manymodels.spark.session import get_spark
from manymodels.spark.training import read_tuned_params, session_conf, train_per_group
from manymodels.storage.model_table import table_format


def default_input(catalog: str = "", schema: str = "", volume: str = "") -> str:
    """The input when none is given (``jobs.locations.Locations.default_input``): the Parquet panel ``prepare_data``
    writes, in the schema's volume on Databricks, under the project folder locally."""
    return Locations(catalog, schema, volume).default_input()


@dataclass
class Prepared:
    parquet_dir: Path
    gzip_dir: Path | None
    holdout: pd.DataFrame
    truth: pd.DataFrame
    n_rows: int
    n_groups: int


def prepare_data(panel: PanelSpec, out_dir: str | Path | None = None, *, layout: str = "both",
                 holdout_fraction: float = 0.05) -> Prepared:
    """Generate a panel, keep a random held-out batch aside, and write the training rows in the chosen layout(s):
    ``parquet``, ``gzip`` (one gzipped CSV per group) or ``both``."""
    if not (isinstance(holdout_fraction, (int, float)) and 0 <= holdout_fraction < 1):  # NaN fails the comparison
        raise InputError(f"holdout_fraction={holdout_fraction!r}: expected a number in [0, 1), e.g. 0.05.")
    out = Path(out_dir) if out_dir else project_home() / "data" / "panel"
    out.mkdir(parents=True, exist_ok=True)
    rows, truth = make_panel(panel)
    rng = np.random.default_rng(panel.seed + 1)
    mask = rng.random(len(rows)) < holdout_fraction
    holdout, train = rows[mask].reset_index(drop=True), rows[~mask].reset_index(drop=True)
    parquet_dir = write_parquet(train, out / "parquet") if layout in ("parquet", "both") else out / "parquet"
    gzip_dir = None
    if layout in ("gzip", "both"):
        gzip_dir = out / "gzip"
        write_gzip_per_group(train, panel.key_cols, gzip_dir)
    holdout.to_parquet(out / "holdout.parquet", index=False)
    truth.to_parquet(out / "truth.parquet", index=False)
    return Prepared(parquet_dir, gzip_dir, holdout, truth, len(train), panel.n_groups)


@dataclass
class TrainResult:
    table: object
    logged: object
    ui_command: str
    timings: dict = field(default_factory=dict)


def train_and_register(spark, source: str, *, group_cols, feature_cols, label_col, estimator: str,
                       params: str | dict | None = None, model_name: str | None = "manymodels_router",
                       alias: str = "champion", experiment: str | None = None, location: str | None = None,
                       fmt: str | None = None, failure_policy: str = "record", seed: int = 42, min_rows: int = 10,
                       training_run_id: str | None = None, retrain: str = "all", model_format: str = "pickle5",
                       trusted_types=(), allowed_modules=(), params_from: str | None = None) -> TrainResult:
    """Train per group, then log and register; the new model table becomes current only once its router
    version is registered, just before the alias moves (a run killed before that changes neither).
    ``retrain``: ``all``, ``failed`` or ``changed`` (see ``retrain.py``). ``allowed_modules``: module prefixes
    ``estimator`` may name beyond ``sklearn``, ``manymodels`` and ``$MANYMODELS_ALLOWED_ESTIMATOR_MODULES``.
    ``params_from``: the model table (folder or table name) of a per-group search of the same estimator
    (``manymodels tune --group-cols``): each group listed there (``ok``) trains with the parameters its tuned model
    was fitted with, over ``params`` (seeds aside, see ``core/group_params.py``); other groups with ``params``.
    The model table's ``params`` column records each group's, and ``retrain="changed"`` retrains a group whose
    tuned parameters changed."""
    est, est_params = load_estimator(estimator, params, allowed_modules=allowed_modules)
    configured = check_estimator(est, est_params)  # a bad estimator or parameter: before MLflow or Spark
    found = tracking.configure(experiment=experiment, create=False)  # reach the store (a bad URI fails now)
    # a training run id already recorded: its fingerprint, so that other input is refused before training
    registered = tracking.registered_fingerprint(model_name, training_run_id, found)
    tuned = read_tuned_params(spark, params_from, group_cols) if params_from else None
    if tuned is not None and len(tuned):  # tuned for another estimator: refused before the training job
        tuned_overrides(configured, tuned["params"].iloc[0], where=f"params_from={params_from!r}")
    df = inputs.read_input(spark, source, key_cols=group_cols, feature_cols=feature_cols, label_col=label_col, fmt=fmt)
    t0 = time.perf_counter()
    table = train_per_group(df, group_cols=group_cols, feature_cols=feature_cols, label_col=label_col,
                            estimator=est, params=est_params, failure_policy=failure_policy, seed=seed,
                            min_rows=min_rows, training_run_id=training_run_id, location=location,
                            expect_fingerprint=registered,
                            retrain=retrain, commit=False, model_format=model_format,
                            trusted_types=tuple(trusted_types), group_params=tuned)
    t1 = time.perf_counter()
    ctx = tracking.configure(experiment=experiment)  # only now: bad input above leaves no empty experiment behind
    logged = tracking.log_training(spark, table, ctx, name=model_name, alias=alias,
                                   extra_params={"source": source, **({"params_from": params_from} if params_from
                                                                      else {})})
    t2 = time.perf_counter()
    return TrainResult(table, logged, tracking.ui_command(ctx), {"train_s": t1 - t0, "mlflow_s": t2 - t1})


def train_job(spark, values: dict) -> TrainResult:
    """The training job as notebook 02, ``manymodels train`` and the nightly job's train task run it: ``values`` are
    the parsed parameters of ``manymodels.jobs.params`` command ``train`` (those the command line alone has may be
    absent). The catalog, schema and volume decide the model's three-level name, the default input and, on
    Databricks, the default model table (``<catalog>.<schema>.<model>_groups``, which executors can write)."""
    where = Locations.of(values)
    name = where.model_name(values["model_name"])
    table = values.get("model_table") or (f"{name}_groups" if where.in_volume else None)
    extra = {k: values[k] for k in ("params_from",) if values.get(k)}
    return train_and_register(
        spark, values.get("input_path") or where.default_input(), group_cols=values["group_cols"],
        feature_cols=values["feature_cols"], label_col=values["label_col"], estimator=values["estimator"],
        params=values["estimator_params"], model_name=name, alias=values["alias"], experiment=values["experiment"],
        location=table, fmt=values.get("format"), failure_policy=values["failure_policy"],
        training_run_id=values.get("training_run_id"), retrain=values["retrain"],
        model_format=values.get("model_format") or "pickle5", trusted_types=values.get("trusted_types") or (),
        **extra)


def score_with_registered(model_uri: str, rows: pd.DataFrame) -> pd.DataFrame:
    """Load a registered router (``models:/name@alias``) and score a pandas batch on the driver."""
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(model_uri).predict(rows)


def summarize(result: TrainResult, scored: pd.DataFrame | None, truth_y: pd.Series | None, wall: float,
              quantiles: str | None = None) -> str:
    table, logged = result.table, result.logged
    lines = [f"training run      {table.training_run_id}",
             f"groups            {table.n_groups} trained: {table.counts['ok']} ok, "
             f"{table.counts['failed']} failed, {table.counts['skipped']} skipped",
             f"model table       {table.version}",
             f"MLflow run        {logged.run_id}",
             f"registered model  {logged.model_uri} (version {logged.version})"]
    if quantiles:
        lines.append(quantiles)
    if scored is not None:
        ok = scored["status"] == "ok"
        line = f"held-out batch    {len(scored)} rows scored via {logged.model_uri}: {int(ok.sum())} ok"
        if truth_y is not None and ok.any():
            resid = truth_y[ok].to_numpy() - scored.loc[ok, "prediction"].to_numpy(dtype=float)
            ss_tot = ((truth_y[ok] - truth_y[ok].mean()) ** 2).sum()
            line += f", r2={1 - (resid ** 2).sum() / ss_tot:.4f}, rmse={np.sqrt((resid ** 2).mean()):.4f}"
        other = scored.loc[~ok, "status"].value_counts().to_dict()
        if other:
            line += f"; not scored: {other}"
        lines.append(line)
    lines.append(f"wall time         {wall:.1f} s (train {result.timings['train_s']:.1f} s, "
                 f"MLflow {result.timings['mlflow_s']:.1f} s)")
    lines.append(f"browse            {result.ui_command}")
    return "\n".join(lines)


def metric_quantiles(spark, table) -> str:
    cols = ["holdout_r2", "holdout_rmse"] if table.extra.get("task") == "regression" else \
        ["holdout_accuracy", "holdout_roc_auc"]
    frame = table.read(spark).where("status = 'ok'").select(*cols).toPandas()
    parts = []
    for c in cols:
        q = frame[c].quantile([0.1, 0.5, 0.9])
        parts.append(f"{c} p10={q[0.1]:.3f} p50={q[0.5]:.3f} p90={q[0.9]:.3f}")
    return "metrics           " + "; ".join(parts)


def run_main(n_groups: int = 1000, mean_rows: int = 200, estimator: str = "sklearn.linear_model.LinearRegression",
             master: str | None = None) -> str:
    """The README's main job: prepare a panel, train per group, log + register, score through the alias."""
    start = time.perf_counter()
    spark = get_spark(master)
    panel = PanelSpec(n_groups=n_groups, mean_rows=mean_rows)
    prepared = prepare_data(panel, layout="parquet")  # the main job reads the Parquet layout only
    features = feature_names(panel.n_features)
    result = train_and_register(spark, str(prepared.parquet_dir), group_cols=list(panel.key_cols),
                                feature_cols=features, label_col="y", estimator=estimator, fmt="parquet")
    batch = pd.concat([prepared.holdout, _unknown_group_rows(prepared.holdout, panel)], ignore_index=True)
    scored = score_with_registered(result.logged.model_uri, batch.drop(columns=["y"]))
    quantiles = metric_quantiles(spark, result.table)
    return summarize(result, scored, batch["y"], time.perf_counter() - start, quantiles)


def _unknown_group_rows(holdout: pd.DataFrame, panel: PanelSpec) -> pd.DataFrame:
    """Two rows of a group that was never trained, to show how the router reports them."""
    rows = holdout.head(2).copy()
    rows[panel.key_cols[0]] = -1
    return rows


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


def batch_score(spark, *, input_path: str = "", model_name: str = "manymodels_router", alias: str = "champion",
                output_table: str = "", passthrough_cols: str = "", experiment: str = "", shuffle: str = "true",
                model_cache_mb: str = "", score_date: str = "", catalog: str = "", schema: str = "",
                volume: str = DEFAULT_VOLUME, staging_dir: str = "") -> Scored:
    """The scoring job (notebook 05, ``manymodels score``, the nightly job's last task): score ``input_path``
    per group with the registered router ``models:/<model_name>@<alias>`` (``catalog.schema.model_name`` when
    both are given; the version the alias names is resolved once and scored) and file the scores under
    ``score_date`` (``YYYY-MM-DD``; empty: today, UTC) in ``output_table``: a table name, or a folder written as
    Parquet inside an output root (see ``check_output``; default: the table ``<catalog>.<schema>.<model>_scores`` on
    Databricks, else a folder under the project folder). ``catalog``, ``schema``, ``volume`` and ``staging_dir``:
    see ``manymodels.locations``.

    Output: ``score_per_group``'s columns, then ``training_run_id`` (the registered version's training run),
    ``mlflow_run_id`` (the MLflow run that logged it), ``scored_at`` (UTC timestamp of this run) and
    ``score_date`` (date), PARTITIONED BY ``score_date``. A run replaces its date's scores and no other date's:
    a new table is created partitioned by ``score_date`` (Delta on Databricks, else Parquet:
    ``$MANYMODELS_TABLE_FORMAT``); an existing one gets ``INSERT OVERWRITE ... PARTITION (score_date = ...)`` (Delta:
    ``replaceWhere``); a folder gets a dynamic partition overwrite of ``score_date=<date>/`` and keeps its
    ``_MANYMODELS_SCORES`` marker at its root. Scores an older version wrote unpartitioned (or a table with other
    columns) are refused with an ``InputError`` naming the output, never overwritten. ``shuffle``: ``false`` for
    input already clustered by group (one file or partition per group); ``model_cache_mb``: the bound on the
    models each Python worker keeps loaded (empty: ``$MANYMODELS_MODEL_CACHE_MB`` or 1024); see
    ``api.score_per_group``. Groups without a model are rows with their ``status``, never a failed job."""
    shuffled = parse_bool("shuffle", shuffle)
    cache_mb = str(model_cache_mb).strip() or None
    model_cache.cache_bytes(cache_mb)  # checked before anything is read
    day = score_day(score_date)
    where = Locations(catalog, schema, volume)
    source = input_path or where.default_input()
    check_path(source, "input_path")  # before the output is checked or anything is read
    registered = where.model_name(model_name)
    default_output = (f"{registered}_scores" if where.in_volume  # a table beside the model, executors write it
                      else str(project_home() / "scores" / re.sub(r"[^\w.-]", "_", model_name)))
    output = check_output(output_table or default_output, model_name=registered, input_path=source, spark=spark)
    start = time.perf_counter()
    tracking.configure(experiment=experiment or None, create=False)  # scoring logs nothing: no experiment is made
    version = registered_version(f"models:/{registered}@{alias}")  # one version for the scores and their run ids
    label = f"{version.name}/{version.version}"
    run_id = (getattr(version, "tags", None) or {}).get(tracking.RUN_TAG)
    df = read_any(spark, source)
    keep = [c.strip() for c in passthrough_cols.split(",") if c.strip()]
    scored = api.score_per_group(df, f"models:/{version.name}/{version.version}", passthrough_cols=keep,
                                 shuffle=shuffled, model_cache_mb=cache_mb,
                                 staging_dir=where.staging_dir(staging_dir))
    scored_at = datetime.datetime.now(datetime.timezone.utc)
    scored = with_score_columns(scored, day=day, scored_at=scored_at, training_run_id=run_id,
                                mlflow_run_id=getattr(version, "run_id", None))
    with session_conf(spark, ROW_BOUNDED_ARROW), Progress(spark, f"scoring with {label}"):  # tasks, no plan
        write_scores(spark, scored, output, day)  # as the embedded session has it (settings.ARROW_MAX_BYTES)
    counts = dated_counts(spark, output, day, scored_at)
    rows = sum(counts.values())
    if "/" in output:
        write_scores_marker(output, model_version=label, rows=rows, score_date=day)
    return Scored(output, label, rows, counts, time.perf_counter() - start, day, run_id,
                  getattr(version, "run_id", None))


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
