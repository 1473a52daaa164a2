"""The thin Spark layer of per-group and per-file training.

Flow: driver-side validation -> one cheap aggregate of group sizes and data fingerprints (null
keys, empty input) -> which groups to train or carry over (``retrain.py``) -> bin-packed partition
plan -> one ``mapInPandas`` pass of the pure ``fit_stream`` over sorted partitions (plus the carried
rows of the previous table) -> model table written atomically. The UDF returns rows only: no
MLflow, no files.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, fields, replace
from functools import partial, reduce

import pandas as pd
from pyspark.sql import functions as F

from manymodels.core.checks import check_columns, check_estimator, check_settings
from manymodels.core.estimators import task_of
from manymodels.core.fitting import GroupFitError, fit_stream
from manymodels.core.group_params import GROUP_PARAMS_COL, attach, group_fingerprints
from manymodels.core.keys import canonical_key
from manymodels.core.memory import FRACTION_COL, arrow_batch_conf, check_group_memory, row_bytes, sample_fractions
from manymodels.core.planning import TASKS_PER_CORE
from manymodels.core.retrain import (
    CARRIED_FROM,
    DATA_FP,
    HASH_HIGH,
    HASH_LOW,
    PREVIOUS_COLS,
    SPEC_FP,
    check_mode,
    data_fingerprints,
    plan_retrain,
    spec_fingerprint,
)
from manymodels.core.schema import (
    FIXED_COLUMNS,
    FIXED_NAMES,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    model_table_ddl,
    quoted,
)
from manymodels.core.spec import TrainSpec
from manymodels.errors import InputError, short_list
from manymodels.spark.checks import check_group_sizes, null_key_aggregate, value_aggregates
from manymodels.spark.inputs import FILE_KEY, read_files
from manymodels.spark.packing import plan_frame, plan_groups, run_packed
from manymodels.spark.progress import Progress, task_plan
from manymodels.spark.session import col, cols, keys_frame, session_conf
from manymodels.spark.worker_process import with_task_attempt
from manymodels.storage import model_table
from manymodels.storage.model_index import run_fingerprint

TRAIN_ARROW_BATCH_ROWS = 100_000


@dataclass
class ModelTable:
    """A committed model table: where it is, which training run wrote it, and its counts."""

    location: str
    version: str
    spec: TrainSpec
    n_groups: int
    counts: dict[str, int]
    wall_seconds: float
    plan_partitions: int
    extra: dict = field(default_factory=dict)
    committed: bool = True  # False: written but not yet the location's current table (see ``commit``)
    # canonical key -> (status, model SHA-256, model format), read once right after the table was written: what
    # this training run wrote, checked again when it is logged or staged for scoring (``packed_store.PackedModels``)
    index: dict | None = field(default=None, repr=False)
    fingerprint: str = ""  # model_index.run_fingerprint of what decided the models (keys, data, spec)

    @property
    def training_run_id(self) -> str:
        return self.spec.training_run_id

    def read(self, spark):
        return model_table.read_version(spark, self.version)

    def expected_index(self, spark) -> dict:
        """``index``, read now from the written version when the table was made without it."""
        if self.index is None:
            self.index, _ = capture_index(spark, self.version, self.spec)
        return self.index

    def commit(self, spark=None, *, registered: str | None = None) -> None:
        """Make this written version the location's current model table (atomic; idempotent). ``registered``
        (``name/version``) is recorded with the pointer: the alias follows it (``tracking.log_training``)."""
        if not self.committed:
            model_table.commit_version(self.location, self.version, self.training_run_id, spark=spark,
                                       registered=registered)
            self.committed = True


class TrainingRunConflict(InputError):
    """A training run id reused for different models (other data or settings)."""


def capture_index(spark, version: str, spec: TrainSpec) -> tuple[dict, dict[str, int]]:
    """What a written version holds, without its blobs: ``(canonical key -> (status, model SHA-256, model format),
    counts per status)``."""
    keys = list(spec.group_cols)
    frame = model_table.read_columns(spark, version, keys + ["status", "model_sha256", "model_format"])
    ok = frame["status"] == STATUS_OK
    formats = frame["model_format"].where(frame["model_format"].notna(), getattr(spec, "model_format", None))
    index = {canonical_key(k): (status, sha if good else None, fmt if good else None)
             for k, status, sha, fmt, good in zip(frame[keys].itertuples(index=False, name=None), frame["status"],
                                                  frame["model_sha256"], formats, ok)}
    counts = frame["status"].value_counts().to_dict()
    return index, {s: int(counts.get(s, 0)) for s in (STATUS_OK, STATUS_FAILED, STATUS_SKIPPED)}


def input_fingerprint(stats: pd.DataFrame, keys: list[str], spec_fp: str, retrain: dict) -> str:
    """``model_index.run_fingerprint`` of a training run from its input's aggregate: every group's key and data
    fingerprint, the spec fingerprint, and the retrain mode with the version it carries models from."""
    specs = stats[SPEC_FP] if SPEC_FP in stats else [spec_fp] * len(stats)  # per group with its own parameters
    rows = [(canonical_key(k), fp, s) for k, fp, s in
            zip(stats[keys].itertuples(index=False, name=None), stats[DATA_FP], specs)]
    carried = f"{retrain.get('mode')}|{retrain.get('carried_from_version') or ''}"
    return run_fingerprint(rows + [(("_mm_retrain",), carried, "")])


SETTINGS = tuple(f.name for f in fields(TrainSpec) if f.name not in ("group_cols", "feature_cols", "label_col",
                                                                      "estimator", "sampled_from"))


def make_spec(df, *, group_cols, feature_cols, label_col, estimator, params=None, **settings) -> TrainSpec:
    """Validate everything that can be checked without a Spark job and return the frozen spec.

    ``settings`` are the other ``TrainSpec`` fields (seed, min_rows, holdout_fraction, failure_policy,
    training_run_id, task, pass_dataframe, max_group_bytes, oversize).
    """
    unknown = [k for k in settings if k not in SETTINGS]
    if unknown:
        raise InputError(f"Unknown setting(s) {short_list(unknown)}: expected one of {short_list(SETTINGS, 10)}.")
    estimator = check_estimator(estimator, params)
    if not settings.get("training_run_id"):
        settings["training_run_id"] = f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    spec = TrainSpec(group_cols=tuple(group_cols), feature_cols=tuple(feature_cols), label_col=label_col,
                     estimator=estimator, **settings)
    check_settings(spec)
    check_columns(spec, df.dtypes)
    return spec


def _result_ddl(df, spec: TrainSpec) -> str:
    types = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    return model_table_ddl([(c, types[c]) for c in spec.group_cols])


def group_sizes(df, key_cols) -> pd.DataFrame:
    """One cheap aggregate: rows per group, collected to the driver (one small row per group)."""
    return df.groupBy(*cols(key_cols)).count().toPandas()


def group_stats(df, spec: TrainSpec) -> pd.DataFrame:
    """One cheap aggregate: rows per group and its ``data_fingerprint`` (``retrain.py``), on the driver."""
    h = F.xxhash64(*cols([*spec.feature_cols, spec.label_col]))
    mask = F.lit(0x7FFFFFFF).cast("bigint")
    stats = (df.groupBy(*cols(spec.group_cols))
             .agg(F.count(F.lit(1)).alias("count"), *null_key_aggregate(df, spec.group_cols),
                  F.sum(h.bitwiseAND(mask)).alias(HASH_LOW),
                  F.sum(F.shiftright(h, 32).bitwiseAND(mask)).alias(HASH_HIGH), *value_aggregates(spec, df))
             .toPandas())
    stats[DATA_FP] = data_fingerprints(stats) if len(stats) else pd.Series([], dtype="object")
    return stats.drop(columns=[HASH_LOW, HASH_HIGH])


def build_model_table(df, spec: TrainSpec, *, sizes: pd.DataFrame | None = None,
                      tasks_per_core: int = TASKS_PER_CORE):
    """The lazy Spark DataFrame of the model table, and the number of groups of each planned task."""
    sizes = group_stats(df, spec) if sizes is None else sizes
    check_group_sizes(spec.group_cols, sizes)
    keys = list(spec.group_cols)
    over = check_group_memory(sizes, keys, row_bytes(dict(df.dtypes), keys, spec.feature_cols, spec.label_col),
                              spec.max_group_bytes, spec.oversize)
    packing = plan_groups(df, sizes, keys, tasks_per_core)
    used = keys + list(spec.feature_cols) + [spec.label_col]
    doubles, row_filter = (), None
    if len(over):  # oversize="subsample": keep a seeded, content-determined fraction of those groups' rows
        packing.assignment = (packing.assignment.merge(sample_fractions(over, keys), on=keys, how="left")
                              .fillna({FRACTION_COL: 1.0}))
        spec = replace(spec, sampled_from=tuple((canonical_key(tuple(r[k] for k in keys)), int(r["count"]))
                                                for _, r in over.iterrows()))
        doubles, row_filter = (FRACTION_COL,), _uniform(used, spec.seed) < F.col(FRACTION_COL)
    fingerprints = tuple(c for c in (DATA_FP, SPEC_FP) if c in packing.assignment)  # SPEC_FP: per-group params
    passed = (GROUP_PARAMS_COL,) if GROUP_PARAMS_COL in packing.assignment else ()
    plan_df = plan_frame(df, packing, doubles=doubles, strings=fingerprints, ints=passed)
    out = run_packed(df, packing, fit_stream, _result_ddl(df, spec), used=used, plan_df=plan_df, doubles=doubles,
                     passed=passed, row_filter=row_filter, spec=spec)
    if fingerprints:  # a broadcast join of the small plan: the trained rows are not shuffled again
        out = out.drop(*fingerprints).join(plan_df.select(*cols(keys), *fingerprints).hint("broadcast"), on=keys,
                                           how="left")
    if SPEC_FP not in fingerprints:
        out = out.withColumn(SPEC_FP, F.lit(spec_fingerprint(spec)))
    return out.select(*cols(keys), *FIXED_NAMES), task_plan(packing)  # groups and rows per task


def _uniform(names, seed: int):
    """A number in [0, 1) fixed by the row's content and the seed: the sample does not depend on partitioning."""
    modulus = (1 << 31) - 1
    return F.pmod(F.xxhash64(*cols(names), F.lit(int(seed))), F.lit(modulus)) / float(modulus)


def train_per_group(df, *, group_cols, feature_cols, label_col, estimator, params=None,
                    location: str | None = None, tasks_per_core: int = TASKS_PER_CORE,
                    progress: float | bool | None = None, retrain: str = "all", commit: bool = True,
                    expect_fingerprint: str | None = None, group_params: pd.DataFrame | None = None,
                    **settings) -> ModelTable:
    """Fit a clone of ``estimator`` for every group of ``df`` in parallel and commit the model table.

    Input: ``group_cols`` (no nulls), numeric ``feature_cols``, ``label_col`` (rows with a null label are
    dropped; a group left with fewer than ``min_rows`` rows is ``skipped``, or, with
    ``failure_policy="raise"``, refused before the job); ``params`` are checked
    against the estimator's; ``settings`` are ``TrainSpec`` fields (seed=42, min_rows=10,
    holdout_fraction=0.2, failure_policy="record", training_run_id, task, pass_dataframe,
    max_group_bytes=2 GiB, oversize="refuse"|"subsample"). A group whose estimated worker memory
    (``memory.py``) exceeds ``max_group_bytes`` is refused before the training job with an
    ``InputError`` naming it, or, with ``oversize="subsample"``, trained on a seeded sample (its
    ``n_rows_input`` column keeps the original row count). ``progress``: seconds between progress lines
    on the console (default ``MANYMODELS_PROGRESS_SECONDS`` or 10; ``False`` for none).
    ``retrain``: ``"all"`` (default), ``"failed"`` or ``"changed"``: train only those groups and carry the
    others over, byte for byte, from the table committed at ``location`` (``retrain.py``).
    ``commit=False`` writes the new version without making it current: ``ModelTable.commit()`` does
    that later (``tracking.log_training`` does it once the model is registered, before the alias moves).
    ``expect_fingerprint``: the ``ModelTable.fingerprint`` already recorded for this ``training_run_id``
    (``jobs.train_and_register`` passes it): input that would train other models raises ``TrainingRunConflict``
    before the training job.
    ``group_params``: each listed group's own parameters (the key columns and ``params``, a JSON object per group,
    e.g. ``read_tuned_params`` of a per-group search's table), set over ``estimator`` with ``params`` for that
    group (``core/group_params.py``); the model table's ``params`` column records every group's, and
    ``retrain="changed"`` retrains a group whose parameters changed.
    Output: a ``ModelTable`` whose rows follow ``schema.FIXED_COLUMNS``, one per group. Bad input
    raises ``InputError`` before the training job; ``failure_policy="raise"`` raises ``GroupFitError``
    naming the group and leaves the previously committed table untouched.
    """
    spec = make_spec(df, group_cols=group_cols, feature_cols=feature_cols, label_col=label_col,
                     estimator=estimator, params=params, **settings)
    check_mode(retrain)
    location = location or model_table.default_location()
    start = time.perf_counter()
    spark, keys = df.sparkSession, list(spec.group_cols)
    stats = group_stats(df, spec)
    check_group_sizes(spec.group_cols, stats, spec=spec, df=df)
    if group_params is not None:
        stats, sets = attach(stats, keys, spec.estimator, group_params)
        spec = replace(spec, group_params=sets)
        stats[SPEC_FP] = group_fingerprints(spec_fingerprint(spec), stats[GROUP_PARAMS_COL], sets).to_numpy()
    previous = _previous_rows(spark, location, keys) if retrain != "all" else None
    to_train, to_carry = plan_retrain(stats, None if previous is None else previous[1], keys, retrain,
                                      spec_fingerprint(spec), location=location)
    parts, task_groups = [], []
    if len(to_train):
        trained, task_groups = build_model_table(df, spec, sizes=to_train, tasks_per_core=tasks_per_core)
        parts.append(trained)
    if len(to_carry):
        parts.append(_carried(df, previous[0], to_carry, spec))
    table = reduce(lambda a, b: a.unionByName(b), parts)
    info = {"mode": retrain, "trained": len(to_train), "carried": len(to_carry),
            "carried_from_version": previous[0] if len(to_carry) else None,
            "dropped": 0 if previous is None else int(len(previous[1]) - len(previous[1].merge(stats[keys], on=keys)))}
    fingerprint = input_fingerprint(stats, keys, spec_fingerprint(spec), info)
    check_rerun(spec.training_run_id, fingerprint, expect_fingerprint)
    with Progress(spark, f"training {spec.training_run_id}", task_groups, progress):
        result = _commit(table, spec, location, start, len(task_groups), dict(df.dtypes), retrain=info,
                         commit=commit)
    result.fingerprint = fingerprint
    return result


def read_tuned_params(spark, location: str, key_cols) -> pd.DataFrame:
    """Each group's parameters in the model table committed at ``location`` (a per-group search's: ``manymodels
    tune --group-cols``, ``search_per_group(location=...)``): the key columns and ``params`` (JSON) of its ``ok``
    rows, one small row per group (no blobs). An ``InputError`` names a missing table or key column."""
    keys = list(key_cols)
    try:
        version = model_table.current(location, spark)["version"]
    except model_table.ModelTableNotFound:
        raise InputError(f"params_from={location!r}: no committed model table there. Fix: run the per-group search "
                         "first (manymodels tune --group-cols ...; its summary names its model table), or leave "
                         "params_from empty.") from None
    frame = model_table.read_columns(spark, version, [*keys, "status", "params"])
    missing = [k for k in keys if len(frame) and frame[k].isna().all()]
    if missing:
        raise InputError(f"params_from={location!r}: its model table has no column(s) {short_list(missing)} of "
                         f"group_cols {short_list(keys)}. Fix: tune with the same group_cols as the training, or "
                         "leave params_from empty.")
    return frame.loc[frame["status"] == STATUS_OK, [*keys, "params"]].reset_index(drop=True)


def check_rerun(training_run_id: str, fingerprint: str, registered: str | None, where: str = "") -> None:
    """``TrainingRunConflict`` when ``training_run_id`` is already recorded with another fingerprint: a training run
    id names one set of models."""
    if registered is not None and registered != fingerprint:
        raise TrainingRunConflict(
            f"training_run_id {training_run_id!r} is already recorded{where} with other models: its groups, data "
            f"or settings differed (run fingerprint {registered}, this input's {fingerprint or 'unknown'}). A training "
            "run id names one set of models, so nothing was trained or written. Fix: pass a new training_run_id (or "
            "none: one is generated), or rerun this id on the data and settings it was first run with.")


def _previous_rows(spark, location: str, keys: list[str]) -> tuple[str, pd.DataFrame] | None:
    """The committed table at ``location``: its version and its keys + ``PREVIOUS_COLS`` (no blobs), or None."""
    try:
        version = model_table.current(location, spark)["version"]
    except model_table.ModelTableNotFound:
        return None
    frame = model_table.read_columns(spark, version, keys + list(PREVIOUS_COLS))
    return version, frame


def _carried(df, version: str, carry_keys: pd.DataFrame, spec: TrainSpec):
    """The previous version's rows of ``carry_keys``, unchanged but for ``training_run_id`` and ``carried_from``."""
    spark, keys = df.sparkSession, list(spec.group_cols)
    types = dict(df.dtypes)
    wanted = keys_frame(spark, carry_keys[keys], ", ".join(f"{quoted(k)} {types[k]}" for k in keys))
    previous = model_table.read_version(spark, version)
    previous = previous.select(*[col(k).cast(types[k]).alias(k) for k in keys],  # a table of older columns
                               *[F.col(c) if c in previous.columns else F.lit(None).cast(t).alias(c)
                                 for c, t, _ in FIXED_COLUMNS])
    rows = previous.join(wanted.hint("broadcast"), on=keys, how="inner")
    rows = (rows.withColumn(CARRIED_FROM, F.coalesce(F.col(CARRIED_FROM), F.col("training_run_id")))
                .withColumn("training_run_id", F.lit(spec.training_run_id)))
    return rows.select(*cols(keys), *FIXED_NAMES)


def _commit(table, spec: TrainSpec, location: str, start: float, n_parts: int, input_types: dict, *,
            retrain: dict | None = None, commit: bool = True) -> ModelTable:
    try:
        # Large Arrow batches (fewer rows when rows are wide): fewer Python round trips; groups are sliced out
        # of them anyway.
        arrow = arrow_batch_conf(TRAIN_ARROW_BATCH_ROWS, input_types,
                                 [*spec.group_cols, *spec.feature_cols, spec.label_col])
        with session_conf(table.sparkSession, arrow):
            version = model_table.write(table, location, spec.training_run_id, commit=commit)
    except Exception as exc:  # surface the worker's group error as the driver's own
        message = str(exc)
        if GroupFitError.__name__ in message:
            line = next((ln for ln in message.splitlines() if "GroupFitError: Training failed for group" in ln),
                        message)
            raise GroupFitError(line.split("GroupFitError: ", 1)[-1].strip()) from exc
        raise
    index, counts = capture_index(table.sparkSession, version, spec)
    result = ModelTable(location=location, version=version, spec=spec, n_groups=sum(counts.values()), counts=counts,
                        wall_seconds=0.0, plan_partitions=n_parts,
                        extra={"input_types": input_types, "task": task_of(spec), "retrain": retrain or {}},
                        committed=commit, index=index)
    result.wall_seconds = time.perf_counter() - start
    return result


def train_per_file(spark, path: str, *, feature_cols, label_col, estimator, params=None,
                   location: str | None = None, **settings) -> ModelTable:
    """One model per input file, one row per file: each gzipped CSV is one partition, so all-gzip input needs
    no shuffle; a file Spark splits (plain or bzip2 CSV larger than ``spark.sql.files.maxPartitionBytes``) is
    gathered by one shuffle first (``read_files``).

    The key column is ``source_file`` (the file's name). Spark may pack several small files into one
    partition; their rows stay contiguous, which is all ``fit_stream`` needs. ``settings`` as for
    ``train_per_group``.
    """
    label_type = "string" if settings.get("task") == "classification" else "double"
    df = read_files(spark, path, feature_cols=feature_cols, label_col=label_col, label_type=label_type)
    spec = make_spec(df, group_cols=[FILE_KEY], feature_cols=feature_cols, label_col=label_col,
                     estimator=estimator, params=params, **settings)
    start = time.perf_counter()
    table = df.mapInPandas(partial(with_task_attempt, fit_stream, spec=spec), schema=_result_ddl(df, spec))
    return _commit(table, spec, location or model_table.default_location("file_models"), start, -1,
                   dict(df.dtypes))
