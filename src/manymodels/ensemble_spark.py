"""The thin Spark layer of fold ensembles, and the fold-ensemble study run by the notebook, the CLI and the bench.

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
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from manymodels import serialization
from manymodels.config import ARROW_BYTE_CAP, ARROW_MAX_BYTES, ARROW_MAX_RECORDS
from manymodels.ensemble import (COMBINES, FoldEnsembleClassifier, _meta_view, fit_member, folds_of, meta_sample,
                                 member_outputs, member_seed, oof_sums, row_hashes, stack_features, stack_width,
                                 used_mask)
from manymodels.fitting import _task_attempt
from manymodels.planning import partition_labels
from manymodels.schemas import quoted
from manymodels.session import col, cols, map_in_pandas
from manymodels.validation import NUMERIC_SPARK_TYPES, InputError, short_list

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

    from manymodels.validation import NONFINITE_COL, nonfinite_aggregate, raise_nonfinite

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
    attempt = _task_attempt()
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
        blob = serialization.dumps(model)
        yield pd.DataFrame({"member": [int(member)], "n_rows": [len(part)],
                            "seed": [member_seed(ensemble.seed, int(member))],
                            "fit_seconds": [took], "model": [blob], "model_sha256": [serialization.sha256(blob)],
                            "library_versions": [serialization.library_versions()], "task_attempt": [attempt]})


def oof_pass(batches, *, ensemble, blobs, feature_cols, label_col, classes, meta_fraction, stacking):
    """``mapInPandas``: predict with every member; per-member out-of-fold sums (one ``sums`` row per task) and,
    for stacking, the meta-model's input rows of the hash sample (``row`` rows)."""
    members = [serialization.MODEL_CACHE.get(blob, sha, where=f"fold ensemble member {k}")
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
    per_member = 1 if classes is None else _meta_view(np.zeros((1, 1, len(classes)))).shape[2]
    return per_member * stack_width(ensemble.n_members, ensemble.sampling)


# ---------------------------------------------------------------- the driver

def fit_spark(ensemble, df, *, label_col, feature_cols=None):
    """Fit ``ensemble`` (a ``FoldEnsembleClassifier`` / ``FoldEnsembleRegressor``) on a Spark DataFrame, one
    Spark task per member; returns the ensemble (fitted, picklable, predicting without Spark)."""
    from pyspark.sql import functions as F

    from manymodels.training import _session_conf

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
    with _session_conf(df.sparkSession, {ARROW_MAX_RECORDS: str(MEMBER_ARROW_BATCH_ROWS),
                                          ARROW_MAX_BYTES: ARROW_BYTE_CAP}):
        rows = trained.toPandas().sort_values("member").reset_index(drop=True)
    wall_members = time.perf_counter() - start
    missing = sorted(set(range(K)) - set(rows["member"].tolist()))
    if missing:
        raise InputError(f"n_members={K} with sampling={ensemble.sampling!r}: member(s) {short_list(missing)} got no "
                         f"training rows out of {n_rows}. Use fewer members or more rows.")
    members = []
    for member, blob, sha, versions in rows[["member", "model", "model_sha256", "library_versions"]].itertuples(
            index=False, name=None):
        members.append(serialization.loads(bytes(blob), sha, where=f"fold ensemble member {member}"))
        serialization.warn_on_version_mismatch(versions, f"fold ensemble member {member}")
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

STUDY_DATA = dict(n_features=20, n_informative=10, n_redundant=5, n_repeated=5, n_classes=2, n_clusters_per_class=4,
                  flip_y=0.1, class_sep=0.75, random_state=123, shuffle=True)
STUDY_SPLIT_SEED = 123
# The published figures (N = 1,000,000, CatBoost, 5 folds): method -> (accuracy, wall time), as printed there.
PUBLISHED = {
    "centralized_one": ("", ""),
    "centralized_folds": ("0.9045", "~46 s per fold"),
    "distributed": ("0.9043", "~256 s per fold"),
    "members": ("0.8922-0.8931", "26.5 s total"),
    "mean": ("0.8969", ""), "median": ("0.8963", ""), "max": ("0.8888", ""), "stacking": ("0.8965", ""),
}


@dataclass
class StudyResult:
    table: pd.DataFrame            # one row per method: accuracy, wall seconds, the published figures
    members: pd.DataFrame          # one row per member: rows, seed, fit seconds, validation and test accuracy
    ensemble: object               # the fitted ensemble, combining with the requested rule
    kde_png: Path
    logged: object | None          # tracking.LoggedTraining
    result_line: str
    accuracy: dict = field(default_factory=dict)
    wall: dict = field(default_factory=dict)


def study_data(n_samples: int):
    """The study's data set: ``make_classification`` as published, 70/30 split (random_state=123)."""
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    X, y = make_classification(n_samples=n_samples, **STUDY_DATA)
    cols = [f"x{i}" for i in range(X.shape[1])]
    X_train, X_test, y_train, y_test = train_test_split(pd.DataFrame(X, columns=cols), y, test_size=0.3,
                                                        random_state=STUDY_SPLIT_SEED)
    return X_train.reset_index(drop=True), X_test.reset_index(drop=True), y_train, y_test


def default_learner() -> str:
    """scikit-learn's HistGradientBoosting, installed everywhere (the study used CatBoost, which job parameters
    may name only when ``MANYMODELS_ALLOWED_ESTIMATOR_MODULES`` allows it: ``jobs.load_estimator``)."""
    return "sklearn.ensemble.HistGradientBoostingClassifier"


def parse_study_args(n_samples, n_members, sampling, combine) -> tuple[int, int]:
    """Widget / command-line strings -> numbers, with an ``InputError`` naming the parameter."""
    try:
        n, k = int(str(n_samples).replace("_", "").replace(",", "")), int(n_members)
    except ValueError as exc:
        raise InputError(f"n_samples={n_samples!r}, n_members={n_members!r}: expected integers, e.g. "
                         "n_samples=100000 n_members=5.") from exc
    if n < 100 or k < 2:
        raise InputError(f"n_samples={n}, n_members={k}: expected n_samples >= 100 and n_members >= 2.")
    if combine not in COMBINES:
        raise InputError(f"combine={combine!r}: expected one of {COMBINES}.")
    return n, k


def run_study(spark, *, n_samples="100000", n_members="5", sampling="disjoint", combine="mean",
              learner="sklearn.ensemble.HistGradientBoostingClassifier", model_name="manymodels_fold_ensemble",
              alias="champion", experiment="", seed: int = 42, out_dir: str | Path | None = None,
              log: bool = True, centralized_threads=(None,), warm_up: bool = False) -> StudyResult:
    """Reproduce the fold-ensemble study: centralized (one model; K fold models on (K-1)/K, one after another),
    K members trained in parallel on Spark (one per 1/K sample, or per fold complement), the four ensembles on
    the test set, a KDE plot of P(class 1) per true class per method, and (``log``) the ensemble combining with
    ``combine`` logged and registered with ``alias``. Arguments are the notebook's widgets (strings accepted).
    ``centralized_threads``: native thread limits to time the centralized models with (None: the library's
    default, all cores); the fastest setting is the baseline. ``warm_up``: fit a small ensemble first (untimed)
    so the timed one does not pay for starting Spark's Python workers."""
    from sklearn.base import clone

    from manymodels.config import project_home
    from manymodels.jobs import load_estimator

    n, K = parse_study_args(n_samples, n_members, sampling, combine)
    cls, params = load_estimator(learner or default_learner())
    base = clone(cls).set_params(**params)
    ensemble = FoldEnsembleClassifier(base, n_members=K, sampling=sampling, combine="stacking", seed=seed)
    ensemble.check_params()  # bad settings fail before any data or Spark work
    X_train, X_test, y_train, y_test = study_data(n)
    acc, wall, probs = {}, {}, {}

    runs = [_centralized(base, X_train.to_numpy(), y_train, X_test.to_numpy(), y_test, K, seed, t)
            for t in centralized_threads]
    best = min(runs, key=lambda r: r["wall_folds"])  # the fastest thread setting is the baseline
    acc.update(centralized_one=best["acc_one"], centralized_folds=best["acc_folds"])
    wall.update(centralized_one=best["wall_one"], centralized_folds=best["wall_folds"])
    probs["centralized, one model"] = best["proba_one"]

    if warm_up:  # Python workers started and imports done, as they are on a cluster that already ran a job
        small = X_train.head(1000 * K).assign(label=y_train[:1000 * K])
        FoldEnsembleClassifier(base, n_members=K, sampling=sampling, seed=seed).fit(
            spark.createDataFrame(small), "label")
    start = time.perf_counter()
    sdf = spark.createDataFrame(X_train.assign(label=y_train))
    cached = _try_cache(sdf)  # the members' timing starts from data already in Spark, as the baseline's is in numpy
    wall["to_spark"] = time.perf_counter() - start
    start = time.perf_counter()
    try:
        ensemble.fit(cached, "label")
    finally:
        if cached is not sdf:
            cached.unpersist()
    wall["ensemble_fit"] = time.perf_counter() - start
    wall["members"] = ensemble.fit_info_["wall_members_s"]
    P = ensemble.member_outputs(X_test)
    member_acc = [float(np.mean(ensemble.classes_[np.argmax(p, axis=1)] == y_test)) for p in P]
    acc["members"] = float(np.mean(member_acc))
    probs[f"member 0 (1 of {K})"] = P[0][:, 1]
    for rule in COMBINES:
        proba = ensemble.combined(P, rule)
        acc[rule] = float(np.mean(ensemble.classes_[np.argmax(proba, axis=1)] == y_test))
        probs[f"ensemble: {rule}"] = proba[:, 1]

    table = study_table(acc, wall, ensemble, K, member_acc, runs)
    members = ensemble.members_table().assign(test_accuracy=member_acc)
    out = Path(out_dir) if out_dir else project_home() / "fold_ensemble"
    out.mkdir(parents=True, exist_ok=True)
    kde_png = kde_plot(probs, y_test, out / f"fold_ensemble_kde_n{n}_k{K}_{sampling}.png",
                       title=f"P(class 1) per true class, N={n:,}, K={K}, {sampling}")
    final = ensemble.with_combine(combine)
    line = result_line(n, acc, wall)
    logged = None
    if log:
        logged = log_study(final, X_test, table, members, kde_png, acc, wall, n=n, learner=learner,
                           model_name=model_name, alias=alias, experiment=experiment)
    return StudyResult(table, members, final, kde_png, logged, line, acc, wall)


def _centralized(base, X, y, X_test, y_test, K: int, seed: int, threads) -> dict:
    """One model on all training rows, then K fold models on (K-1)/K one after another, under a thread limit."""
    from sklearn.model_selection import KFold
    from threadpoolctl import threadpool_limits

    from manymodels.fitting import _seeded_clone

    out = {"threads": threads}
    with threadpool_limits(limits=threads):
        start = time.perf_counter()
        one = _seeded_clone(base, seed).fit(X, y)
        out["wall_one"] = time.perf_counter() - start
        out["proba_one"] = one.predict_proba(X_test)[:, 1]
        out["acc_one"] = float(np.mean(one.predict(X_test) == y_test))
        start, fold_acc = time.perf_counter(), []
        for i, (rows, _) in enumerate(KFold(K, shuffle=True, random_state=STUDY_SPLIT_SEED).split(X)):
            model = _seeded_clone(base, seed + i).fit(X[rows], y[rows])
            fold_acc.append(float(np.mean(model.predict(X_test) == y_test)))
        out["wall_folds"] = time.perf_counter() - start
    out["acc_folds"] = float(np.mean(fold_acc))
    return out


def _try_cache(sdf):
    """Cache and materialize (serverless compute refuses caching: then the plan is left as it is)."""
    try:
        cached = sdf.cache()
        cached.count()
        return cached
    except Exception:  # noqa: BLE001 - NOT_SUPPORTED_WITH_SERVERLESS and friends
        return sdf


def study_table(acc: dict, wall: dict, ensemble, K: int, member_acc: list[float], runs=()) -> pd.DataFrame:
    sampling = ensemble.sampling
    share = f"1/{K}" if sampling == "disjoint" else f"{K - 1}/{K}"
    info = ensemble.fit_info_
    rows = []
    for r in runs or [{"threads": None, "acc_one": acc["centralized_one"], "wall_one": wall["centralized_one"],
                       "acc_folds": acc["centralized_folds"], "wall_folds": wall["centralized_folds"]}]:
        how = f", {r['threads']} thread(s)" if len(runs) > 1 and r["threads"] else (
            ", all cores" if len(runs) > 1 else "")
        baseline = "; baseline" if len(runs) > 1 and r["wall_folds"] == wall["centralized_folds"] else ""
        rows += [("centralized_one", f"centralized: one model on all training rows{how}", r["acc_one"],
                  r["wall_one"], ""),
                 ("centralized_folds", f"centralized: {K} fold models on {K - 1}/{K}, one after another{how} "
                  "(mean accuracy)", r["acc_folds"], r["wall_folds"], f"wall = all folds{baseline}")]
    rows += [
        ("distributed", "fully distributed training (not run here)", np.nan, np.nan, "published only"),
        ("members", f"{K} members on {share} each, in parallel on Spark (mean accuracy)", acc["members"],
         wall["members"], f"members {min(member_acc):.4f}-{max(member_acc):.4f}; wall = all members"),
        ("mean", "ensemble: mean of probabilities", acc["mean"], np.nan, ""),
        ("median", "ensemble: median of probabilities", acc["median"], np.nan, ""),
        ("max", "ensemble: max of probabilities (per class, renormalized)", acc["max"], np.nan, ""),
        ("stacking", "ensemble: stacking (random forest on out-of-fold predictions)", acc["stacking"],
         info.get("wall_oof_s", 0.0) + info.get("wall_meta_s", 0.0), "wall = out-of-fold pass + meta fit"),
    ]
    return pd.DataFrame([(label, a, w, PUBLISHED[key][0], PUBLISHED[key][1], note)
                         for key, label, a, w, note in rows],
                        columns=["method", "accuracy", "wall_s", "published_accuracy", "published_wall", "note"])


def result_line(n: int, acc: dict, wall: dict) -> str:
    return (f"RESULT n={n} acc_centralized={acc['centralized_folds']:.4f} acc_mean={acc['mean']:.4f} "
            f"acc_median={acc['median']:.4f} acc_max={acc['max']:.4f} acc_stacking={acc['stacking']:.4f} "
            f"wall_members_s={wall['members']:.1f} wall_centralized_s={wall['centralized_folds']:.1f}")


def kde_plot(probs: dict[str, np.ndarray], y_true: np.ndarray, path: Path, *, title: str = "",
             max_points: int = 5000) -> Path:
    """One panel per method: the density of the predicted P(class 1) for each true class (as in the study)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import gaussian_kde

    grid = np.linspace(0, 1, 201)
    cols = 3
    rows = int(np.ceil(len(probs) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), sharex=True, squeeze=False)
    rng = np.random.default_rng(0)
    y_true = np.asarray(y_true)
    for ax, (name, p) in zip(axes.ravel(), probs.items()):
        for cls, color in ((0, "tab:blue"), (1, "tab:orange")):
            values = np.asarray(p)[y_true == cls]
            if len(values) > max_points:
                values = rng.choice(values, max_points, replace=False)
            if len(values) > 1 and np.ptp(values) > 0:
                ax.plot(grid, gaussian_kde(values)(grid), color=color, label=f"true class {cls}")
                ax.fill_between(grid, gaussian_kde(values)(grid), color=color, alpha=0.15)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("predicted P(class 1)")
    for ax in axes.ravel()[len(probs):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def log_study(final, X_test: pd.DataFrame, table: pd.DataFrame, members: pd.DataFrame, kde_png: Path, acc: dict,
              wall: dict, *, n: int, learner: str, model_name: str, alias: str, experiment: str):
    """The ensemble through ``tracking.log_estimator``: members' scores and times as metrics and a table, the
    combination rule as a param, the KDE plot, registered (once per configuration) with ``alias``."""
    from manymodels import tracking

    ctx = tracking.configure(experiment=experiment or None)
    metrics = {f"accuracy_{k}": v for k, v in acc.items()}
    metrics.update({f"wall_{k}_s": v for k, v in wall.items()})
    for row in members.itertuples(index=False):
        metrics[f"member_{row.member}_validation_accuracy"] = row.validation_score
        metrics[f"member_{row.member}_fit_seconds"] = row.fit_seconds
        metrics[f"member_{row.member}_test_accuracy"] = row.test_accuracy
    params = {"combine": final.combine, "sampling": final.sampling, "n_members": final.n_members, "n_samples": n,
              "learner": learner, "seed": final.seed, "backend": final.fit_info_.get("backend")}
    key = f"fold-ensemble|n={n}|k={final.n_members}|{final.sampling}|{final.combine}|{learner}|seed={final.seed}"
    return tracking.log_estimator(final, ctx, run_key=key, name=model_name, input_example=X_test.head(5),
                                  alias=alias, params=params, metrics=metrics,
                                  tables={"members": members, "methods": table}, files=[kde_png],
                                  serialization_format="cloudpickle")


def format_study(result: StudyResult) -> str:
    """The printed report: methods table, members table, plot path, registered model, RESULT line."""
    with pd.option_context("display.width", 200, "display.max_colwidth", 80):
        lines = [result.table.to_string(index=False, float_format=lambda v: f"{v:.4f}"), "",
                 result.members.drop(columns=["model_sha256"]).to_string(
                     index=False, float_format=lambda v: f"{v:.4f}"),
                 "", f"KDE plot          {result.kde_png}"]
    if result.logged is not None:
        lines.append(f"registered model  {result.logged.model_uri} (version {result.logged.version}, run "
                     f"{result.logged.run_id})")
    lines.append(result.result_line)
    return "\n".join(lines)


def image_html(path: str | Path) -> str:
    """An ``<img>`` tag with the PNG inlined (for ``displayHTML`` in a Databricks notebook)."""
    import base64

    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'
