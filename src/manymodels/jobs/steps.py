"""Job steps shared by the CLI, the notebooks and the bundle's tasks: prepare, train + register, score.

Each step takes plain arguments and returns a small result object, so notebooks stay thin and
everything they do is reachable from tests.
"""
from __future__ import annotations

import json
import os
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
from manymodels.core.panel import feature_names, make_panel, write_gzip_per_group, write_parquet
from manymodels.core.spec import PanelSpec
from manymodels.errors import InputError
from manymodels.settings import OUTPUT_ROOT_ENV, ROW_BOUNDED_ARROW, on_databricks, project_home
from manymodels.spark import inputs
from manymodels.spark.inputs import read_any
from manymodels.spark.session import get_spark
from manymodels.spark.training import session_conf, train_per_group


def default_input() -> str:
    """Where ``prepare_data`` writes the Parquet layout by default (the notebooks' local default)."""
    path = project_home() / "data" / "panel" / "parquet"
    if not path.exists():
        raise InputError(f"No input at {path}: run notebooks/01_prepare_data.py (or `manymodels prepare`) "
                         "first, or pass input_path.")
    return str(path)


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
                       trusted_types=(), allowed_modules=()) -> TrainResult:
    """Train per group, then log and register; the new model table becomes current only once its router
    version is registered, just before the alias moves (a run killed before that changes neither).
    ``retrain``: ``all``, ``failed`` or ``changed`` (see ``retrain.py``). ``allowed_modules``: module prefixes
    ``estimator`` may name beyond ``sklearn``, ``manymodels`` and ``$MANYMODELS_ALLOWED_ESTIMATOR_MODULES``."""
    est, est_params = load_estimator(estimator, params, allowed_modules=allowed_modules)
    check_estimator(est, est_params)  # a bad estimator or parameter: before MLflow or Spark
    found = tracking.configure(experiment=experiment, create=False)  # reach the store (a bad URI fails now)
    # a training run id already recorded: its fingerprint, so that other input is refused before training
    registered = tracking.registered_fingerprint(model_name, training_run_id, found)
    df = inputs.read_input(spark, source, key_cols=group_cols, feature_cols=feature_cols, label_col=label_col, fmt=fmt)
    t0 = time.perf_counter()
    table = train_per_group(df, group_cols=group_cols, feature_cols=feature_cols, label_col=label_col,
                            estimator=est, params=est_params, failure_policy=failure_policy, seed=seed,
                            min_rows=min_rows, training_run_id=training_run_id, location=location,
                            expect_fingerprint=registered,
                            retrain=retrain, commit=False, model_format=model_format,
                            trusted_types=tuple(trusted_types))
    t1 = time.perf_counter()
    ctx = tracking.configure(experiment=experiment)  # only now: bad input above leaves no empty experiment behind
    logged = tracking.log_training(spark, table, ctx, name=model_name, alias=alias,
                                   extra_params={"source": source})
    t2 = time.perf_counter()
    return TrainResult(table, logged, tracking.ui_command(ctx), {"train_s": t1 - t0, "mlflow_s": t2 - t1})


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
    output: str
    model_version: str
    rows: int
    statuses: dict
    seconds: float

    def summary(self) -> str:
        return (f"scored {self.rows:,} rows with {self.model_version} in {self.seconds:.1f} s -> {self.output}; "
                f"status: {self.statuses}")


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


def check_output(output: str, *, model_name: str = "", input_path: str = "", roots=None) -> str:
    """Decide on the driver, before anything is read or scored, that ``output`` may be (over)written; returns the
    table name, or the path resolved (``..`` and symbolic links followed).

    A table name (no ``/``) is accepted. A path must lie strictly inside one of ``roots`` (default:
    ``output_roots(model_name)``), be a local or FUSE path (``/Volumes/...``; URIs such as ``s3://`` cannot be
    checked), not hold the input, and either not exist, be an empty folder, or hold the ``_MANYMODELS_SCORES``
    marker of a previous scores output. Anything else is an ``InputError`` naming the path."""
    if "/" not in output:
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
    return str(path)


def write_scores_marker(path: str, *, model_version: str, rows: int) -> Path:
    """Mark ``path`` as a scores output the next run may overwrite (JSON: model version, rows, time written)."""
    marker = Path(path) / SCORES_MARKER
    marker.write_text(json.dumps({"model_version": model_version, "rows": rows,
                                  "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
    return marker


def batch_score(spark, *, input_path: str = "", model_name: str = "manymodels_router", alias: str = "champion",
                output_table: str = "", passthrough_cols: str = "", experiment: str = "", shuffle: str = "true",
                model_cache_mb: str = "") -> Scored:
    """The scoring job (notebook 05, ``manymodels score``, the nightly job's last task): score ``input_path``
    per group with the registered router ``models:/<model_name>@<alias>`` and write ``output_table``
    (a table name, or a folder written as Parquet inside an output root, see ``check_output``; default under
    the project folder). A folder is overwritten only if it is empty or holds the ``_MANYMODELS_SCORES`` marker
    this function writes after a successful write. ``shuffle``: ``false`` for input already clustered by group
    (one file or partition per group); ``model_cache_mb``: the bound on the models each Python worker keeps
    loaded (empty: ``$MANYMODELS_MODEL_CACHE_MB`` or 1024); see ``api.score_per_group``."""
    shuffled = parse_bool("shuffle", shuffle)
    cache_mb = str(model_cache_mb).strip() or None
    model_cache.cache_bytes(cache_mb)  # checked before anything is read
    source = input_path or default_input()
    check_path(source, "input_path")  # before the output is checked or anything is read
    default_output = project_home() / "scores" / re.sub(r"[^\w.-]", "_", model_name)
    output = check_output(output_table or str(default_output), model_name=model_name, input_path=source)
    start = time.perf_counter()
    tracking.configure(experiment=experiment or None, create=False)  # scoring logs nothing: no experiment is made
    df = read_any(spark, source)
    keep = [c.strip() for c in passthrough_cols.split(",") if c.strip()]
    uri = f"models:/{tracking.model_name(model_name)}@{alias}"
    scored = api.score_per_group(df, uri, passthrough_cols=keep, shuffle=shuffled, model_cache_mb=cache_mb)
    with session_conf(spark, ROW_BOUNDED_ARROW):  # as the embedded session has it (settings.ARROW_MAX_BYTES)
        if "/" in output:
            scored.write.mode("overwrite").parquet(output)
        else:
            scored.write.mode("overwrite").saveAsTable(output)
    written = spark.read.parquet(output) if "/" in output else spark.read.table(output)
    counts = {r["status"]: int(r["count"]) for r in written.groupBy("status").count().collect()}
    version = written.select("model_version").limit(1).collect()
    model_version = version[0][0] if version else uri
    if "/" in output:
        write_scores_marker(output, model_version=model_version, rows=sum(counts.values()))
    return Scored(output, model_version, sum(counts.values()), counts, time.perf_counter() - start)
