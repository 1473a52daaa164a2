"""The thin Spark layer of fold ensembles (the estimators: ``core.ensemble``; the study: ``studies.fold_ensemble``).

``fit_spark(ensemble, df, label_col=..., feature_cols=...)`` (what ``FoldEnsemble*.fit(spark_df, "label")``
calls): driver-side checks (columns, types, null labels, classes: one aggregate job) -> pass 1: a narrow
``mapInPandas`` adds each row's content hash and fold, rows go to their member(s) (``complement`` replicates a
row to the K-1 members that train on it), ``repartition(K, label)`` with labels placed on exact partitions,
and one ``mapInPandas`` task per member fits it and returns one row (pickled bytes, SHA-256, rows, seed, fit
seconds) -> the driver verifies every blob's SHA-256 before unpickling -> pass 2: one narrow ``mapInPandas``
over the input predicts with every member (each loaded once per Python worker) and returns per-member
out-of-fold sums (validation scores) and, for stacking, the meta-model's input rows (a hash sample of at most
about ``meta_max_rows``) -> the meta-model is fitted on the driver. The UDFs return rows only (no MLflow, no
files). The members, their order of rows and their seeds are those of the pandas path, so the result
predicts exactly like ``fit`` on the same rows in pandas.
"""
from __future__ import annotations

import time
from functools import partial

import numpy as np
import pandas as pd

from manymodels.core import model_bytes, model_cache
from manymodels.core.checks import NUMERIC_SPARK_TYPES
from manymodels.core.folds import (
    fit_member,
    folds_of,
    member_outputs,
    member_seed,
    meta_sample,
    meta_view,
    oof_sums,
    row_hashes,
    stack_features,
    stack_width,
    used_mask,
)
from manymodels.core.planning import partition_labels
from manymodels.core.schema import quoted
from manymodels.errors import InputError, short_list
from manymodels.settings import ARROW_BYTE_CAP, ARROW_MAX_BYTES, ARROW_MAX_RECORDS
from manymodels.spark.checks import NONFINITE_COL, nonfinite_aggregate, raise_nonfinite
from manymodels.spark.progress import Progress
from manymodels.spark.session import col, cols, map_in_pandas, session_conf
from manymodels.spark.worker_process import task_attempt

HASH_COL, FOLD_COL, MEMBER_COL, PART_COL, KIND_COL = "_mm_hash", "_mm_fold", "_mm_member", "_mm_part", "_mm_kind"
MEMBER_SCHEMA = ("member int, n_rows bigint, seed bigint, fit_seconds double, model binary, model_sha256 string, "
                 "library_versions string, task_attempt string")
MAX_CLASSES = 1000
# One member's whole sample arrives in one task: large Arrow batches mean fewer Python round trips.
MEMBER_ARROW_BATCH_ROWS = 100_000


# ---------------------------------------------------------------- driver-side checks

def check_frame(df, feature_cols, label_col, classifier: bool) -> tuple[list[str], str]:
    """Columns present, numeric features, a usable label type; returns ``(feature_cols, label_col)``."""
    dtypes = dict(df.dtypes)
    if not isinstance(label_col, str) or not label_col:
        raise InputError(f"label column {label_col!r}: with a Spark DataFrame pass the label column's name, e.g. "
                         "ensemble.fit(df, 'label') or fit(df, label_col='label'); "
                         f"columns are {short_list(dtypes, 12)}.")
    if label_col not in dtypes:
        raise InputError(f"label_col={label_col!r} is not a column of the input: found {short_list(dtypes, 12)}. "
                         "Pass the name of the label column.")
    feature_cols = list(feature_cols) if feature_cols else [c for c in df.columns if c != label_col]
    missing = [c for c in feature_cols if c not in dtypes]
    if missing:
        raise InputError(f"feature_cols: column(s) {short_list(missing)} not in the input, which has "
                         f"{short_list(dtypes, 12)}. Fix the names.")
    if not feature_cols or label_col in feature_cols:
        raise InputError(f"feature_cols={feature_cols!r}: expected at least one feature column, not including the "
                         f"label {label_col!r}.")
    bad = [(c, dtypes[c]) for c in feature_cols if not dtypes[c].startswith(NUMERIC_SPARK_TYPES + ("decimal",))]
    if bad:
        shown = ", ".join(f"'{c}' is {t}" for c, t in bad[:5])
        raise InputError(f"Non-numeric feature column(s): {shown}{' ...' if len(bad) > 5 else ''}. Expected numeric "
                         "types; cast them (F.col(c).cast('double')) or encode them first.")
    label_type = dtypes[label_col]
    numeric = label_type.startswith(NUMERIC_SPARK_TYPES + ("decimal",))
    if not (numeric or (classifier and label_type == "string")):
        raise InputError(f"Label column '{label_col}' has type {label_type}: expected a numeric column"
                         f"{' or a string column' if classifier else ''}.")
    return feature_cols, label_col


def label_summary(df, label_col: str, classifier: bool, feature_cols=()) -> tuple[int, np.ndarray | None]:
    """One aggregate job: the row count and, for a classifier, the sorted classes. Null labels and infinite
    values (in ``feature_cols`` or the label) are refused."""
    from pyspark.sql import functions as F

    inf = nonfinite_aggregate(df, [*feature_cols, label_col])
    if not classifier:
        row = df.agg(F.count(F.lit(1)).alias("n"), F.count(col(label_col)).alias("labelled"), *inf).collect()[0]
        n, labelled = int(row["n"]), int(row["labelled"])
        n_inf = int(row[NONFINITE_COL] or 0) if inf else 0
        counts = None
    else:
        counts = (df.groupBy(col(label_col)).agg(F.count(F.lit(1)).alias("count"), *inf).limit(MAX_CLASSES + 2)
                  .toPandas())
        n = int(counts["count"].sum())
        labelled = int(counts.loc[counts[label_col].notna(), "count"].sum())
        n_inf = int(counts[NONFINITE_COL].sum()) if inf else 0
    if n == 0:
        raise InputError("The input has no rows: expected training rows. Check the input path or filter.")
    if n_inf:
        raise_nonfinite(df, [*feature_cols, label_col])
    if labelled < n:
        raise InputError(f"{n - labelled} of {n} row(s) have a null label in column '{label_col}': every training "
                         f"row needs a label. Drop them first (df.dropna(subset=['{label_col}'])).")
    if not classifier:
        return n, None
    if len(counts) > MAX_CLASSES:
        raise InputError(f"Label column '{label_col}' has more than {MAX_CLASSES} distinct values: expected class "
                         "labels. Use FoldEnsembleRegressor for a continuous target.")
    classes = np.sort(counts[label_col].to_numpy())
    from sklearn.utils.multiclass import check_classification_targets

    try:
        check_classification_targets(classes)
    except ValueError as exc:
        raise InputError(f"Label column '{label_col}' does not hold class labels ({exc}): use FoldEnsembleRegressor "
                         "for a continuous target.") from exc
    return n, classes


# ---------------------------------------------------------------- the pandas UDF bodies (rows out only)

def _arrays(pdf: pd.DataFrame, feature_cols, label_col) -> tuple[np.ndarray, np.ndarray]:
    return pdf[list(feature_cols)].to_numpy(dtype=np.float64, na_value=np.nan), pdf[label_col].to_numpy()


def add_folds(batches, *, feature_cols, label_col, seed: int, n_members: int):
    """``mapInPandas``: append the row's content hash (as int64) and its fold."""
    for pdf in batches:
        X, y = _arrays(pdf, feature_cols, label_col)
        h = row_hashes(X, y)
        yield pdf.assign(**{HASH_COL: h.view(np.int64), FOLD_COL: folds_of(h, seed, n_members).astype(np.int32)})


def fit_members(batches, *, ensemble, feature_cols, label_col):
    """``mapInPandas``: fit every member present in this partition (one, by plan) on its rows in hash order."""
    frames = [b for b in batches if len(b)]
    if not frames:
        return
    pdf = pd.concat(frames, ignore_index=True)
    attempt = task_attempt()
    with _task_threads():
        yield from _fit_partition(pdf, ensemble, feature_cols, label_col, attempt)


def _task_threads():
    """Limit native thread pools (OpenMP, BLAS) to the cores Spark gave this task: K members running side by
    side, each spinning up one thread per machine core, oversubscribe the cores and run several times slower."""
    from threadpoolctl import threadpool_limits

    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        cpus = ctx.cpus() if ctx is not None else None
    except ImportError:
        cpus = None
    return threadpool_limits(limits=cpus) if cpus else threadpool_limits(limits=None)


def _fit_partition(pdf, ensemble, feature_cols, label_col, attempt):
    for member, part in pdf.groupby(MEMBER_COL, sort=True):
        order = np.argsort(part[HASH_COL].to_numpy().view(np.uint64), kind="stable")
        X, y = _arrays(part, feature_cols, label_col)
        model, took = fit_member(ensemble, X[order], y[order], int(member))
        blob = model_bytes.dumps(model)
        yield pd.DataFrame({"member": [int(member)], "n_rows": [len(part)],
                            "seed": [member_seed(ensemble.seed, int(member))],
                            "fit_seconds": [took], "model": [blob], "model_sha256": [model_bytes.sha256(blob)],
                            "library_versions": [model_bytes.library_versions()], "task_attempt": [attempt]})


def oof_pass(batches, *, ensemble, blobs, feature_cols, label_col, classes, meta_fraction, stacking):
    """``mapInPandas``: predict with every member; per-member out-of-fold sums (one ``sums`` row per task) and,
    for stacking, the meta-model's input rows of the hash sample (``row`` rows)."""
    members = [model_cache.MODEL_CACHE.get(blob, sha, where=f"fold ensemble member {k}")
               for k, (blob, sha) in enumerate(blobs)]
    K, sampling = ensemble.n_members, ensemble.sampling
    f_cols = _cols("f", _meta_width(ensemble, classes) if stacking else 0)
    s_cols = _cols("s", K * _n_sums(classes))
    sums = np.zeros((K, _n_sums(classes)))
    with _task_threads():
        for pdf in batches:
            if not len(pdf):
                continue
            X, y = _arrays(pdf, feature_cols, label_col)
            h = row_hashes(X, y)
            fold = folds_of(h, ensemble.seed, K)
            P = member_outputs(members, X, classes)
            used = used_mask(fold, K, sampling)
            sums += oof_sums(P, y, used, classes)
            keep = meta_sample(h, ensemble.seed, meta_fraction) if stacking else None
            if stacking and keep.any():
                out = pd.DataFrame(stack_features(P[:, keep], used[:, keep], stack_width(K, sampling)), columns=f_cols)
                out[s_cols] = np.nan
                out.insert(0, KIND_COL, "row")
                out.insert(1, HASH_COL, h[keep].view(np.int64))
                out.insert(2, label_col, y[keep])
                yield out
    row = pd.DataFrame([sums.ravel()], columns=s_cols)
    row[f_cols] = np.nan
    row.insert(0, KIND_COL, "sums")
    row.insert(1, HASH_COL, None)
    row.insert(2, label_col, None)
    yield row[[KIND_COL, HASH_COL, label_col, *f_cols, *s_cols]]


def _cols(prefix: str, n: int) -> list[str]:
    return [f"_mm_{prefix}{i}" for i in range(n)]


def _n_sums(classes) -> int:
    return 2 if classes is not None else 4


def _meta_width(ensemble, classes) -> int:
    per_member = 1 if classes is None else meta_view(np.zeros((1, 1, len(classes)))).shape[2]
    return per_member * stack_width(ensemble.n_members, ensemble.sampling)


# ---------------------------------------------------------------- the driver

def fit_spark(ensemble, df, *, label_col, feature_cols=None):
    """Fit ``ensemble`` (a ``FoldEnsembleClassifier`` / ``FoldEnsembleRegressor``) on a Spark DataFrame, one
    Spark task per member; returns the ensemble (fitted, picklable, predicting without Spark)."""
    from pyspark.sql import functions as F

    ensemble.check_params()
    classifier = ensemble._classifier
    feature_cols, label_col = check_frame(df, feature_cols, label_col, classifier)
    n_rows, classes = label_summary(df, label_col, classifier, feature_cols)
    K, seed = ensemble.n_members, ensemble.seed
    if n_rows < 2 * K:
        raise InputError(f"n_members={K} needs at least {2 * K} rows (a few per member); the input has {n_rows}. "
                         "Use fewer members or more rows.")
    template = ensemble.__class__(**ensemble.get_params(deep=False))  # what the executors need, nothing fitted
    data = df.select(*cols([*feature_cols, label_col]))
    start = time.perf_counter()
    hashed = map_in_pandas(data, partial(add_folds, feature_cols=feature_cols, label_col=label_col, seed=seed,
                                         n_members=K), _schema_plus(data, f"`{HASH_COL}` bigint, `{FOLD_COL}` int"))
    if ensemble.sampling == "disjoint":
        routed = hashed.withColumn(MEMBER_COL, F.col(FOLD_COL))
    else:  # each row trains the K-1 members whose left-out fold is not its own
        members = F.array(*[F.lit(k) for k in range(K)])
        routed = hashed.withColumn(MEMBER_COL, F.explode(F.filter(members, lambda m: m != F.col(FOLD_COL))))
    labels = F.array(*[F.lit(int(v)) for v in partition_labels(K)])
    routed = routed.withColumn(PART_COL, F.element_at(labels, F.col(MEMBER_COL) + 1)).repartition(K, PART_COL)
    trained = map_in_pandas(routed, partial(fit_members, ensemble=template, feature_cols=feature_cols,
                                            label_col=label_col), MEMBER_SCHEMA)
    with (session_conf(df.sparkSession, {ARROW_MAX_RECORDS: str(MEMBER_ARROW_BATCH_ROWS),
                                         ARROW_MAX_BYTES: ARROW_BYTE_CAP}),
          Progress(df.sparkSession, f"fold ensemble of {K}", [1] * K, unit="member")):
        rows = trained.toPandas().sort_values("member").reset_index(drop=True)
    wall_members = time.perf_counter() - start
    missing = sorted(set(range(K)) - set(rows["member"].tolist()))
    if missing:
        raise InputError(f"n_members={K} with sampling={ensemble.sampling!r}: member(s) {short_list(missing)} got no "
                         f"training rows out of {n_rows}. Use fewer members or more rows.")
    members = []
    for member, blob, sha, versions in rows[["member", "model", "model_sha256", "library_versions"]].itertuples(
            index=False, name=None):
        members.append(model_bytes.loads(bytes(blob), sha, where=f"fold ensemble member {member}"))
        model_bytes.warn_on_version_mismatch(versions, f"fold ensemble member {member}")
    blobs = [(bytes(b), s) for b, s in zip(rows["model"], rows["model_sha256"])]

    stacking = ensemble.combine == "stacking"
    start = time.perf_counter()
    oof_schema = _oof_schema(data, label_col, _meta_width(ensemble, classes) if stacking else 0,
                             K * _n_sums(classes))
    fraction = ensemble.meta_fraction(n_rows)
    out = map_in_pandas(data, partial(oof_pass, ensemble=template, blobs=blobs, feature_cols=feature_cols,
                                      label_col=label_col, classes=classes, meta_fraction=fraction,
                                      stacking=stacking), oof_schema).toPandas()
    n_meta = _meta_width(ensemble, classes) if stacking else 0
    sums = out.loc[out[KIND_COL] == "sums", _cols("s", K * _n_sums(classes))].to_numpy(dtype=np.float64).sum(axis=0)
    meta_rows = None
    if stacking:
        rows_part = out[out[KIND_COL] == "row"]
        order = np.argsort(rows_part[HASH_COL].to_numpy(dtype=np.int64).view(np.uint64), kind="stable")
        feats = rows_part[_cols("f", n_meta)].to_numpy(dtype=np.float64)
        meta_rows = (feats[order], rows_part[label_col].to_numpy()[order])
    wall_oof = time.perf_counter() - start

    if classifier:
        ensemble.classes_ = classes
    ensemble.n_features_in_ = len(feature_cols)
    ensemble.feature_names_in_ = np.asarray(feature_cols, dtype=object)
    info = {"backend": "spark", "n_rows": n_rows, "wall_members_s": wall_members, "wall_oof_s": wall_oof,
            "task_attempts": rows["task_attempt"].tolist()}
    return ensemble.finish_fit(members, seconds=rows["fit_seconds"].tolist(), n_rows=rows["n_rows"].tolist(),
                               sums=sums.reshape(K, _n_sums(classes)), meta_rows=meta_rows, info=info,
                               sha256=rows["model_sha256"].tolist())


def _schema_plus(df, extra_ddl: str) -> str:
    fields = [f"{quoted(f.name)} {f.dataType.simpleString()}" for f in df.schema.fields]
    return ", ".join(fields + [extra_ddl])


def _oof_schema(data, label_col: str, n_features: int, n_sums: int) -> str:
    label_type = next(f.dataType.simpleString() for f in data.schema.fields if f.name == label_col)
    cols = [f"`{KIND_COL}` string", f"`{HASH_COL}` bigint", f"{quoted(label_col)} {label_type}"]
    cols += [f"`{c}` double" for c in _cols("f", n_features) + _cols("s", n_sums)]
    return ", ".join(cols)


# ---------------------------------------------------------------- the fold-ensemble study (notebook 04, CLI, bench)


