"""Job steps shared by the CLI, the notebooks and the bundle's tasks: prepare, train + register, score (whose output
rules and writes live in ``jobs.scores``).

Each step takes plain arguments and returns a small result object, so notebooks stay thin and
everything they do is reachable from tests.
"""
from __future__ import annotations

import datetime
import re
import time
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
from manymodels.jobs.scores import (
    Scored,
    check_output,
    dated_counts,
    registered_version,
    score_day,
    with_score_columns,
    write_scores,
    write_scores_marker,
)
from manymodels.locations import Locations
from manymodels.settings import DEFAULT_VOLUME, ROW_BOUNDED_ARROW, project_home
from manymodels.spark import inputs
from manymodels.spark.inputs import read_any
from manymodels.spark.progress import Progress
from manymodels.spark.session import get_spark
from manymodels.spark.training import read_tuned_params, session_conf, train_per_group


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
