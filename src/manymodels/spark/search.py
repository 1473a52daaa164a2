"""The thin Spark layer of hyperparameter search (the pure part is ``core.search``).

Global search (one dataset): the data is staged once per run as Parquet (a pandas frame written by
the driver, a Spark DataFrame written by Spark) under a name no other run uses, with the SHA-256 of
every staged file recorded by the driver; every Python worker reads it at most once and verifies
each file against those checksums before using it (``search.load_dataset``: ``StagedDataError``
names a changed, missing or extra file). The run deletes its own staged data, and only that.
The tasks travel as a small DataFrame of (candidate, fold) rows placed on exactly
``cores x tasks_per_core`` partitions, largest first, through one ``mapInPandas``: the data is
never copied once per parameter set. Phase 1 gives every partition the same folds of every
candidate; the remaining folds (if any) run in phase 2, bin-packed on the fit times measured in
phase 1. The best candidate is refitted on all rows in one more task.

Per-group search: group sizes -> bin packing -> sorted partitions -> one ``mapInPandas`` pass with
many groups per call (the training machinery); each group's tasks run on that group's rows and
its best candidate is refitted on all of them into a model-table row, so the model table, the
MLflow run and the registered router are the per-group training's own.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd

from manymodels.core import model_bytes
from manymodels.core import search as S
from manymodels.core.checks import NUMERIC_SPARK_TYPES, check_columns
from manymodels.core.estimators import task_of
from manymodels.core.schema import FIXED_NAMES, quoted
from manymodels.core.spec import TrainSpec
from manymodels.errors import InputError, short_list
from manymodels.settings import ARROW_BYTE_CAP, ARROW_MAX_BYTES, ARROW_MAX_RECORDS, USER_ENV
from manymodels.spark.checks import check_group_sizes, null_key_aggregate, value_aggregates
from manymodels.spark.packing import plan_groups, run_packed
from manymodels.spark.progress import Progress, items_per_task, task_plan
from manymodels.spark.session import col, cols, master_of, parallelism, session_conf
from manymodels.spark.training import ModelTable
from manymodels.spark.worker_process import with_task_attempt
from manymodels.storage import model_table
from manymodels.storage.staging import SEARCH_DIR, staging_root

GROUP_ARROW_BATCH_ROWS = 100_000
Staged = S.Staged  # what a staged run's workers receive (defined in the pure core, which verifies it)


def _safe_name(text: str, limit: int = 64) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).strip("._")[:limit]


def staging_user(spark=None) -> str:
    """Whose staging folder: ``MANYMODELS_USER``; else the Unity Catalog user of ``spark`` (``current_user()``,
    no SparkContext needed, so Spark Connect works); else the process's login name. Sanitized to
    ``[A-Za-z0-9._-]`` (``a.b@x.com`` -> ``a.b_x.com``)."""
    import getpass

    user = os.environ.get(USER_ENV, "")
    if not user and spark is not None:
        try:
            user = str(spark.sql("SELECT current_user()").first()[0] or "")
        except Exception:  # noqa: BLE001 - no SQL user (a local session): the login name below
            user = ""
    if not user:
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no login name in a container
            user = ""
    return _safe_name(user) or "unknown"


def default_staging(spark=None, staging: str | None = None) -> str:
    """This user's folder of staged search data, ``<root>/search/<user>``: ``root`` is ``staging`` when given,
    else ``storage.staging.staging_root()`` (``MANYMODELS_STAGING``; on Databricks a folder of the bundle's Volume,
    ``/Volumes/<catalog>/<schema>/<volume>/_staging``, never ``/dbfs/tmp`` nor the driver's working directory;
    locally ``$MANYMODELS_HOME/staging``), the same root model stores are staged under; ``user`` is
    ``staging_user(spark)``."""
    return str(staging_root(staging, master=master_of(spark)) / SEARCH_DIR / staging_user(spark))


def _spark_path(path: str) -> str:
    """Spark's name of a FUSE path (``/dbfs/x`` is ``dbfs:/x``); other paths are the same for both."""
    return "dbfs:" + path[len("/dbfs"):] if path.startswith("/dbfs/") else path


def is_spark_frame(data) -> bool:
    return hasattr(data, "sparkSession") and hasattr(data, "mapInPandas")


def _check_input_columns(columns, spec: S.SearchSpec) -> None:
    wanted = S.staged_columns(spec) + list(spec.group_cols)
    missing = [c for c in dict.fromkeys(wanted) if c not in columns]
    if missing:
        raise InputError(f"Missing input column(s) {short_list(missing)}: expected the feature, label (and CV group / "
                         f"order) columns, found {short_list(list(columns), 12)}. Fix the names or the input.")


def _check_numeric(data, spec: S.SearchSpec) -> None:
    if is_spark_frame(data):
        types = dict(data.dtypes)
        bad = [(c, types[c]) for c in spec.feature_cols if not types[c].startswith(NUMERIC_SPARK_TYPES + ("decimal",))]
    else:
        bad = [(c, str(data[c].dtype)) for c in spec.feature_cols
               if not (pd.api.types.is_numeric_dtype(data[c]) or pd.api.types.is_bool_dtype(data[c]))]
    if bad:
        shown = ", ".join(f"'{c}' is {t}" for c, t in bad[:5])
        raise InputError(f"Non-numeric feature column(s): {shown}{' ...' if len(bad) > 5 else ''}. Expected numeric "
                         "types; cast or encode them, or leave them out of feature_cols.")


def _run_name(spec: S.SearchSpec) -> str:
    """A name no other run uses: the search id (readable) and a random token (the same id may run twice)."""
    return "-".join(p for p in (_safe_name(spec.search_id, 48), uuid.uuid4().hex[:12]) if p)


def stage(data, spec: S.SearchSpec, staging: str | None = None, spark=None) -> Staged:
    """Write the search's columns where every worker can read them, for this run alone, and record the SHA-256 of
    every written file (the workers verify them before using the data; ``search.read_staged``).

    A pandas frame becomes ``<search id>-<token>-<fingerprint>.parquet`` (the fingerprint hashes its content);
    a Spark DataFrame is written by Spark into ``<search id>-<token>-spark/`` (its part files are read back in
    partition order; the driver hashes them after the write). ``_unstage`` deletes exactly that file or folder,
    so concurrent searches of the same data never delete each other's."""
    root = Path(default_staging(spark if spark is not None else _session_of(data), staging))
    root.mkdir(parents=True, exist_ok=True)
    staged_cols = S.staged_columns(spec)
    run = _run_name(spec)
    if is_spark_frame(data):
        _check_input_columns(data.columns, spec)
        path = root / f"{run}-spark"
        try:
            data.select(*[col(c) for c in staged_cols]).write.parquet(_spark_path(str(path)))
            import pyarrow.parquet as pq

            checksums = S.file_checksums(str(path))
            n = sum(pq.ParquetFile(path / name).metadata.num_rows for name, _ in checksums)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)  # a failed write leaves no partial folder behind
            raise
        fingerprint = S.sha256_bytes(json.dumps(checksums).encode())[:32]
        return Staged(str(path), fingerprint, n, checksums, spec.search_id)
    if not isinstance(data, pd.DataFrame):
        raise InputError(f"data is a {type(data).__name__}: expected a pandas or Spark DataFrame with the feature "
                         "and label columns.")
    _check_input_columns(data.columns, spec)
    frame = data.loc[:, staged_cols].reset_index(drop=True)
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    digest.update(json.dumps([[c, str(t)] for c, t in frame.dtypes.items()]).encode())
    fingerprint = digest.hexdigest()[:32]
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    body = buffer.getvalue()
    path = root / f"{run}-{fingerprint}.parquet"
    tmp = root / f".{path.name}.tmp"
    try:
        tmp.write_bytes(body)
        os.replace(tmp, path)  # readers never see a half-written file
    finally:
        tmp.unlink(missing_ok=True)
    return Staged(str(path), fingerprint, len(frame), ((path.name, S.sha256_bytes(body)),), spec.search_id)


def _session_of(data):
    return data.sparkSession if is_spark_frame(data) else None


def _unstage(staged: Staged) -> None:
    """Delete this run's staged file or folder (and nothing else: every run stages under its own name)."""
    p = Path(staged.path)
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def _surface(exc: Exception) -> None:
    """Raise the worker's StagedDataError / SearchTaskError as the driver's own (Spark wraps it in a traceback)."""
    message = str(exc)
    for error in (S.StagedDataError, S.SearchTaskError):
        marker = f"{error.__name__}: "
        if error.__name__ in message:
            line = next((ln for ln in message.splitlines() if marker in ln), message)
            raise error(line.split(marker, 1)[-1].strip()) from exc


def _ddl(columns) -> str:
    return ", ".join(f"{quoted(c)} {t}" for c, t in columns)


@dataclass
class SearchResult:
    """A global search's outcome, named like ``GridSearchCV``'s attributes (``cv_results`` is a DataFrame)."""

    cv_results: pd.DataFrame
    best_index: int
    best_params: dict
    best_score: float
    best_estimator: object | None
    spec: S.SearchSpec
    tasks: pd.DataFrame
    input_example: pd.DataFrame
    timings: dict = field(default_factory=dict)

    @property
    def refit_key(self) -> str:
        return self.spec.refit


def _search_id(given: str | None) -> str:
    return given or f"search-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def _default_features(columns, label_col, roles) -> list[str]:
    return [c for c in columns if c != label_col and c not in roles]


def search(spark, data, *, label_col: str, estimator, feature_cols=None, param_grid=None, param_distributions=None,
           n_iter: int = 10, cv=5, n_splits: int | None = None, shuffle: bool = False, scoring=None, refit=None,
           cv_groups_col: str | None = None, order_col: str | None = None, seed: int = 42,
           failure_policy: str = "record", refit_best: bool = True, staging: str | None = None,
           tasks_per_core: int = 1, search_id: str | None = None) -> SearchResult:
    """Global search: every (candidate, fold) of one dataset as an independent task on the cluster.

    ``data`` is a pandas or Spark DataFrame (``feature_cols`` default: every column but the label, the
    CV-group and the order column). Rows with a null label are dropped; rows keep the input's order
    (a Spark DataFrame's partition order) unless ``order_col`` is given. A failing task scores NaN
    with its error in ``cv_results['error']`` (``failure_policy="raise"`` stops with the task named).
    Bad input raises ``InputError`` before any Spark job. ``staging``: a folder every worker can read, the data
    is staged under ``<staging>/search/<user>/`` (default: ``default_staging``).
    """
    roles = [c for c in (cv_groups_col, order_col) if c]
    feature_cols = feature_cols or _default_features(data.columns, label_col, roles)
    spec = S.make_search_spec(estimator=estimator, feature_cols=feature_cols, label_col=label_col,
                              param_grid=param_grid, param_distributions=param_distributions, n_iter=n_iter, cv=cv,
                              n_splits=n_splits, shuffle=shuffle, scoring=scoring, refit=refit,
                              cv_groups_col=cv_groups_col, order_col=order_col, seed=seed,
                              failure_policy=failure_policy, search_id=_search_id(search_id))
    _check_input_columns(data.columns, spec)
    _check_numeric(data, spec)
    timings = {}
    start = time.perf_counter()
    staged = stage(data, spec, staging, spark)
    try:
        S.check_fold_sizes(pd.DataFrame({"count": [staged.n_rows]}), (), spec.n_splits)
        timings["stage"] = time.perf_counter() - start
        tasks = _run_phases(spark, spec, staged, max(1, parallelism(spark) * tasks_per_core))
        cv_results = S.aggregate(tasks, spec)
        index, params, score = S.best_of(cv_results, spec)
        timings["search"] = time.perf_counter() - start
        model = _refit(spark, spec, staged, index) if refit_best else None
        timings["refit"] = time.perf_counter() - start - timings["search"]
    finally:
        _unstage(staged)
    example = (data.loc[:, list(spec.feature_cols)].head(5).reset_index(drop=True) if isinstance(data, pd.DataFrame)
               else data.select(*cols(spec.feature_cols)).limit(5).toPandas())
    return SearchResult(cv_results, index, params, score, model, spec, tasks, example, timings)


def _run_phases(spark, spec: S.SearchSpec, staged: Staged, n_bins: int) -> pd.DataFrame:
    """All tasks, in one or two jobs (see ``search.plan_phases``); the result rows of every task."""
    results, measured = [], None
    phases = S.plan_phases(spec, n_bins)
    for i, folds in enumerate(phases):
        plan = S.plan_tasks(spec, folds, n_bins, measured, round_robin=len(phases) > 1 and i == 0)
        results.append(_task_job(spark, spec, staged, plan, n_bins))
        done = pd.concat(results, ignore_index=True)
        measured = done.groupby("candidate")["fit_time"].mean().to_dict()
    return pd.concat(results, ignore_index=True)


def _task_job(spark, spec: S.SearchSpec, staged: Staged, plan: pd.DataFrame, n_bins: int) -> pd.DataFrame:
    tasks = spark.createDataFrame(plan[["task_id", "candidate", "fold", "label", "order"]],
                                  schema="task_id long, candidate long, fold long, label int, order long")
    body = partial(with_task_attempt, S.run_task_batches, spec=spec, staged=staged)
    job = (tasks.repartition(n_bins, "label").sortWithinPartitions("order")
           .mapInPandas(body, schema=_ddl(S.task_columns(spec))))
    try:
        with Progress(spark, f"search {spec.search_id}", items_per_task(plan["bin"], n_bins, plan["cost"]), unit="fit"):
            return job.toPandas()
    except Exception as exc:  # noqa: BLE001
        _surface(exc)
        raise


def _refit(spark, spec: S.SearchSpec, staged: Staged, candidate: int):
    """The best candidate fitted on all rows in one Spark task (the driver only unpickles the checked bytes)."""
    body = partial(S.refit_batches, spec=spec, staged=staged, candidate=candidate)
    job = spark.range(0, 1, 1, 1).mapInPandas(body, schema="model binary, model_sha256 string, fit_seconds double")
    try:
        row = job.toPandas().iloc[0]
    except Exception as exc:  # noqa: BLE001
        _surface(exc)
        raise
    return model_bytes.loads(bytes(row["model"]), row["model_sha256"], where=f"search {spec.search_id} refit")


# ---------------------------------------------------------------- per-group search

@dataclass
class GroupSearchResult:
    """Per-group search: every group's cv rows, its best parameters, and the committed model table
    (one refitted best model per group) that ``tracking.log_training`` logs and registers."""

    cv_results: pd.DataFrame
    best: pd.DataFrame
    table: object  # training.ModelTable
    spec: S.SearchSpec
    timings: dict = field(default_factory=dict)


def search_per_group(df, *, group_cols, label_col: str, estimator, feature_cols=None, param_grid=None,
                     param_distributions=None, n_iter: int = 10, cv=5, n_splits: int | None = None,
                     shuffle: bool = False, scoring=None, refit=None, cv_groups_col: str | None = None,
                     order_col: str | None = None, seed: int = 42, failure_policy: str = "record",
                     min_rows: int | None = None, location: str | None = None, staging: str | None = None,
                     tasks_per_core: int | None = None, training_run_id: str | None = None) -> GroupSearchResult:
    """Search per group of a Spark DataFrame: best parameters for each group, refitted on the group's rows.

    Seeds: every ``random_state`` is the group's seed (``keys.group_seed``), for the CV fits and the refit
    alike. Rows are ordered by content (or ``order_col``, needed for time-series CV) before the split.
    A group with fewer rows than folds is refused before any job (``InputError`` naming it); a group whose
    every candidate fails gets a ``failed`` model-table row (or ``SearchTaskError`` under ``"raise"``).
    ``staging``: a folder every worker can read and write; the results pass through ``<staging>/search/<user>/``
    (default: ``default_staging``). ``location``: the model table, also written by the workers (default under
    ``$MANYMODELS_HOME``, which executors on other machines cannot reach: pass one they can).
    """
    from pyspark.sql import functions as F

    group_cols = tuple(group_cols)
    roles = [*group_cols] + [c for c in (cv_groups_col, order_col) if c]
    feature_cols = feature_cols or _default_features(df.columns, label_col, roles)
    run_id = training_run_id or _search_id(None)
    spec = S.make_search_spec(estimator=estimator, feature_cols=feature_cols, label_col=label_col,
                              param_grid=param_grid, param_distributions=param_distributions, n_iter=n_iter, cv=cv,
                              n_splits=n_splits, shuffle=shuffle, scoring=scoring, refit=refit,
                              cv_groups_col=cv_groups_col, order_col=order_col, group_cols=group_cols, seed=seed,
                              failure_policy=failure_policy, search_id=run_id)
    if spec.cv_groups_col is None and "TimeSeries" in type(spec.cv).__name__ and not order_col:
        raise InputError("Time-series CV per group needs order_col (the time column): rows reach each group in "
                         "shuffle order.")
    train_spec = TrainSpec(group_cols=group_cols, feature_cols=tuple(feature_cols), label_col=label_col,
                           estimator=spec.estimator, seed=seed, min_rows=min_rows or spec.n_splits,
                           holdout_fraction=0.0, failure_policy=failure_policy, training_run_id=run_id)
    if not group_cols:
        raise InputError("group_cols is empty: use search() for one dataset, or name the group key column(s).")
    check_columns(train_spec, df.dtypes)
    _check_input_columns(df.columns, spec)
    start, timings = time.perf_counter(), {}
    sizes = (df.groupBy(*cols(group_cols))
             .agg(F.count(F.lit(1)).alias("count"), *null_key_aggregate(df, group_cols),
                  *value_aggregates(train_spec, df))
             .toPandas())
    check_group_sizes(group_cols, sizes, spec=train_spec, df=df)  # null keys, infinite values, class labels
    S.check_fold_sizes(sizes, group_cols, spec.n_splits)
    spark = df.sparkSession
    keys = list(group_cols)
    packing = plan_groups(df, sizes, keys, tasks_per_core)
    types = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    columns = S.group_result_columns(spec, [(k, types[k]) for k in keys])
    used = list(dict.fromkeys(keys + S.staged_columns(spec)))
    result = run_packed(df, packing, S.search_stream, _ddl(columns), used=used, spec=spec, train_spec=train_spec)
    staged = Path(default_staging(spark, staging)) / f"group-search-{_safe_name(run_id, 48)}-{uuid.uuid4().hex}"
    try:
        with session_conf(spark, {ARROW_MAX_RECORDS: str(GROUP_ARROW_BATCH_ROWS), ARROW_MAX_BYTES: ARROW_BYTE_CAP}):
            try:
                with Progress(spark, f"search per group {run_id}", task_plan(packing)):
                    result.write.parquet(_spark_path(str(staged)))
            except Exception as exc:  # noqa: BLE001
                _surface(exc)
                raise
        timings["search"] = time.perf_counter() - start
        rows = spark.read.parquet(_spark_path(str(staged)))
        location = location or model_table.default_location("tuned_model_table")
        version = model_table.write(rows.where(S.REFIT_ROW).select(*cols(keys), *FIXED_NAMES), location, run_id)
        cv_cols = keys + [c for c, _ in S.group_cv_columns(spec)]
        cv_rows = rows.where(f"NOT {S.REFIT_ROW}").select(*cols(cv_cols)).toPandas()
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    cv_results = S.cv_table(cv_rows, spec).sort_values(keys + ["candidate"], ignore_index=True)
    counts = model_table.value_counts(spark, version, "status")
    table = ModelTable(location=location, version=version, spec=train_spec, n_groups=int(sum(counts.values())),
                       counts={s: int(counts.get(s, 0)) for s in ("ok", "failed", "skipped")},
                       wall_seconds=time.perf_counter() - start, plan_partitions=packing.n_parts,
                       extra={"input_types": dict(df.dtypes), "task": task_of(train_spec)})
    timings["total"] = table.wall_seconds
    return GroupSearchResult(cv_results, best_per_group(cv_results, spec), table, spec, timings)


def best_per_group(cv_results: pd.DataFrame, spec: S.SearchSpec) -> pd.DataFrame:
    """One row per group: its best candidate (rank 1 on ``refit``, first of ties), parameters and mean score."""
    keys = list(spec.group_cols)
    rank, mean = f"rank_test_{spec.refit}", f"mean_test_{spec.refit}"
    best = (cv_results.sort_values(keys + [rank, "candidate"]).drop_duplicates(keys, keep="first")
            [keys + ["candidate", "params", mean]].rename(columns={"params": "best_params", mean: "best_score"}))
    return best.reset_index(drop=True)


# ---------------------------------------------------------------- notebook 03 / `manymodels tune`


