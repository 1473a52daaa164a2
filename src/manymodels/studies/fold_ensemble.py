"""The fold-ensemble job and study the notebook, the CLI (``manymodels ensemble``) and the bench run: K members
trained in parallel on Spark, on an input table or on the published study's synthetic classification task, their
four ensembles, accuracies, wall times, a KDE plot of the predicted probabilities and the MLflow run of the
registered ensemble; with ``compare``, the centralized baselines (one model, K fold models on the driver) beside
them. Only bounded samples reach the driver (``TEST_MAX_ROWS`` test rows, ``COMPARE_MAX_ROWS`` training rows for
the baselines)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from manymodels import tracking
from manymodels.core.checks import NUMERIC_SPARK_TYPES, parse_bool
from manymodels.core.ensemble import FoldEnsembleClassifier
from manymodels.core.estimators import load_estimator, seeded_clone
from manymodels.core.folds import COMBINES
from manymodels.errors import InputError, short_list
from manymodels.locations import Locations
from manymodels.settings import DEFAULT_VOLUME, project_home
from manymodels.spark.inputs import read_any
from manymodels.spark.session import col, cols

STUDY_DATA = dict(n_features=20, n_informative=10, n_redundant=5, n_repeated=5, n_classes=2, n_clusters_per_class=4,
                  flip_y=0.1, class_sep=0.75, random_state=123, shuffle=True)


STUDY_SPLIT_SEED = 123
TEST_MAX_ROWS = 200_000  # test rows of an input brought to the driver (accuracies, KDE plot)
COMPARE_MAX_ROWS = 200_000  # training rows of an input the centralized baselines (compare) fit on the driver


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
    data_note: str = ""            # where the rows came from, and which samples reached the driver


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


def run_study(spark, *, input_path="", feature_cols="", label_col="label", n_samples="100000", n_members="5",
              sampling="disjoint", combine="mean", learner="sklearn.ensemble.HistGradientBoostingClassifier",
              model_name="manymodels_fold_ensemble", alias="champion", experiment="", catalog="", schema="",
              volume=DEFAULT_VOLUME, compare="false", seed: int = 42, out_dir: str | Path | None = None,
              log: bool = True, centralized_threads=(None,), warm_up: bool = False) -> StudyResult:
    """The fold-ensemble job and study: K members trained in parallel on Spark (one per 1/K sample, or per fold
    complement), the four ensembles on the test set, a KDE plot of P(class 1) per true class per method, and
    (``log``) the ensemble combining with ``combine`` logged and registered with ``alias`` as
    ``catalog.schema.model_name`` (when both are set). Arguments are the notebook's widgets (strings accepted).

    Data: ``input_path`` (a table, Parquet folder or CSV with a binary ``label_col`` and numeric ``feature_cols``,
    comma-separated; empty: every numeric column but the label) is split by a hash of each row's content, 70/30,
    in Spark: the members train on the 70% without it reaching the driver, and at most ``TEST_MAX_ROWS`` rows of the
    30% are brought to the driver for the accuracies and the plot. Empty ``input_path``: the published study's
    ``make_classification`` data of ``n_samples`` rows. ``compare`` ("true"): also the centralized baselines (one
    model on all training rows; K fold models on (K-1)/K, one after another) on the driver, for an input on at most
    ``COMPARE_MAX_ROWS`` training rows (the table says so); off, the table has the members' and ensembles' rows
    only. ``centralized_threads``: native thread limits to time the centralized models with (None: the library's
    default, all cores); the fastest setting is the baseline. ``warm_up``: fit a small ensemble first (untimed)
    so the timed one does not pay for starting Spark's Python workers."""
    from sklearn.base import clone

    n, K = parse_study_args(n_samples, n_members, sampling, combine)
    comparing = parse_bool("compare", compare)
    name = Locations(catalog, schema).model_name(model_name)
    cls, params = load_estimator(learner or default_learner())
    base = clone(cls).set_params(**params)
    ensemble = FoldEnsembleClassifier(base, n_members=K, sampling=sampling, combine="stacking", seed=seed)
    ensemble.check_params()  # bad settings fail before any data or Spark work
    acc, wall, probs = {}, {}, {}
    data = study_input(spark, input_path, feature_cols, label_col, n)
    start = time.perf_counter()
    train = data.spark_train(spark)
    cached = _try_cache(train)  # the members' timing starts from data already in Spark
    wall["to_spark"] = time.perf_counter() - start

    runs = []
    if comparing:
        X_train, y_train, data.compare_note = data.driver_sample()
        runs = [_centralized(base, X_train, y_train, data.X_test.to_numpy(), data.y_test, K, seed, t)
                for t in centralized_threads]
        best = min(runs, key=lambda r: r["wall_folds"])  # the fastest thread setting is the baseline
        acc.update(centralized_one=best["acc_one"], centralized_folds=best["acc_folds"])
        wall.update(centralized_one=best["wall_one"], centralized_folds=best["wall_folds"])
        probs["centralized, one model"] = best["proba_one"]

    if warm_up:  # Python workers started and imports done, as they are on a cluster that already ran a job
        FoldEnsembleClassifier(base, n_members=K, sampling=sampling, seed=seed).fit(
            cached.limit(1000 * K), data.label_col, feature_cols=data.feature_cols)
    start = time.perf_counter()
    try:
        ensemble.fit(cached, data.label_col, feature_cols=data.feature_cols)
    finally:
        if cached is not train:
            cached.unpersist()
    wall["ensemble_fit"] = time.perf_counter() - start
    wall["members"] = ensemble.fit_info_["wall_members_s"]
    data.load_test()  # after the fit: bad input is refused by the fit's checks first
    X_test, y_test = data.X_test, data.y_test
    if not data.generated:
        n = int(ensemble.fit_info_["n_rows"]) + len(y_test)
    P = ensemble.member_outputs(X_test)
    member_acc = [float(np.mean(ensemble.classes_[np.argmax(p, axis=1)] == y_test)) for p in P]
    acc["members"] = float(np.mean(member_acc))
    probs[f"member 0 (1 of {K})"] = P[0][:, 1]
    for rule in COMBINES:
        proba = ensemble.combined(P, rule)
        acc[rule] = float(np.mean(ensemble.classes_[np.argmax(proba, axis=1)] == y_test))
        probs[f"ensemble: {rule}"] = proba[:, 1]

    table = study_table(acc, wall, ensemble, K, member_acc, runs, published=data.generated,
                        sample_note=data.compare_note)
    members = ensemble.members_table().assign(test_accuracy=member_acc)
    out = Path(out_dir) if out_dir else project_home() / "fold_ensemble"
    out.mkdir(parents=True, exist_ok=True)
    kde_png = kde_plot(probs, np.searchsorted(ensemble.classes_, y_test),
                       out / f"fold_ensemble_kde_n{n}_k{K}_{sampling}.png",
                       title=f"P({ensemble.classes_[1]}) per true class, N={n:,}, K={K}, {sampling}")
    final = ensemble.with_combine(combine)
    line = result_line(n, acc, wall)
    logged = None
    if log:
        logged = log_study(final, X_test, table, members, kde_png, acc, wall, n=n, learner=learner,
                           model_name=name, alias=alias, experiment=experiment, source=input_path)
    return StudyResult(table, members, final, kde_png, logged, line, acc, wall, data.describe())


@dataclass
class StudyInput:
    """The study's data: the training rows as a Spark DataFrame, and the test rows (bounded) on the driver."""

    train: object  # Spark DataFrame: feature and label columns (None: the generated rows, see ``spark_train``)
    feature_cols: list[str]
    label_col: str
    source: str  # input_path, or '' for the generated data
    X_test: pd.DataFrame | None = None
    y_test: np.ndarray | None = None
    test: object = None  # Spark DataFrame of the test split, collected (bounded) by ``load_test``
    train_pandas: tuple | None = None  # the generated data's training rows, already on the driver
    compare_note: str = ""
    test_note: str = ""

    @property
    def generated(self) -> bool:
        return not self.source

    def spark_train(self, spark):
        """The training rows as a Spark DataFrame (the generated ones are brought into Spark now)."""
        if self.train is None:
            X, y = self.train_pandas
            self.train = spark.createDataFrame(pd.DataFrame(X, columns=self.feature_cols).assign(**{self.label_col: y}))
        return self.train

    def load_test(self, max_rows: int | None = None) -> None:
        """The test split on the driver: at most ``max_rows`` (``TEST_MAX_ROWS``) rows of it."""
        if self.X_test is not None:
            return
        max_rows = max_rows or TEST_MAX_ROWS
        pdf = self.test.limit(max_rows + 1).toPandas()
        if len(pdf) > max_rows:
            pdf = pdf.head(max_rows)
            self.test_note = f"test rows: the first {max_rows:,} of the 30% split"
        self.X_test = pdf[self.feature_cols].reset_index(drop=True)
        self.y_test = pdf[self.label_col].to_numpy()

    def driver_sample(self, max_rows: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
        """Training rows for the centralized baselines: all of the generated data; of an input at most
        ``max_rows`` (``COMPARE_MAX_ROWS``), with a note saying so."""
        if self.train_pandas is not None:
            return (*self.train_pandas, "")
        self.load_test()
        max_rows = max_rows or COMPARE_MAX_ROWS
        pdf = self.train.limit(max_rows + 1).toPandas()
        note = ""
        if len(pdf) > max_rows:
            pdf = pdf.head(max_rows)
            note = f"on the first {max_rows:,} training rows (a bounded sample on the driver)"
        return pdf[self.feature_cols].to_numpy(dtype=np.float64), pdf[self.label_col].to_numpy(), note

    def describe(self) -> str:
        where = f"input {self.source}" if self.source else "generated make_classification data"
        return "; ".join(p for p in (where, self.test_note, self.compare_note) if p)


def study_input(spark, input_path: str, feature_cols: str, label_col: str, n_samples: int) -> StudyInput:
    """The generated data (empty ``input_path``), or the input split 70/30 in Spark by a seeded hash of each
    row's content (a row's side does not depend on partitioning or file order; identical rows fall together)."""
    from pyspark.sql import functions as F

    label_col = (label_col or "label").strip()
    given = [c.strip() for c in str(feature_cols or "").split(",") if c.strip()]
    if not input_path:
        X_train, X_test, y_train, y_test = study_data(n_samples)
        features = _study_features(given, list(X_train.columns), label_col, "the generated data")
        return StudyInput(None, features, label_col, "", X_test[features], np.asarray(y_test),
                          train_pandas=(X_train[features].to_numpy(), np.asarray(y_train)))
    df = read_any(spark, input_path)
    if label_col not in df.columns:
        raise InputError(f"label_col={label_col!r} is not a column of {input_path}: found "
                         f"{short_list(df.columns, 12)}. Pass the name of the binary label column.")
    numeric = [c for c, t in df.dtypes if t.startswith(NUMERIC_SPARK_TYPES + ("decimal",)) and c != label_col]
    features = _study_features(given, numeric, label_col, input_path, columns=df.columns)
    labels = [r[0] for r in df.select(col(label_col)).where(col(label_col).isNotNull()).distinct().limit(3)
              .collect()]
    if len(labels) != 2:
        found = "more than 2" if len(labels) > 2 else str(len(labels))
        raise InputError(f"label_col={label_col!r} of {input_path} has {found} distinct value(s) "
                         f"({short_list(sorted(map(str, labels)))}): the fold-ensemble study needs a binary label. "
                         "Fix: pass a two-class label column.")
    rows = df.select(*cols([*features, label_col]))
    bucket = F.pmod(F.xxhash64(*cols([*features, label_col]), F.lit(STUDY_SPLIT_SEED)), F.lit(1000))
    return StudyInput(rows.where(bucket >= 300), features, label_col, input_path, test=rows.where(bucket < 300))


def _study_features(given: list[str], candidates: list[str], label_col: str, where: str, columns=None) -> list[str]:
    columns = candidates if columns is None else list(columns)
    if not given:
        if not candidates:
            raise InputError(f"{where} has no numeric column besides the label {label_col!r}: expected feature "
                             "columns. Fix: pass feature_cols, or cast the features to numbers.")
        return candidates
    missing = [c for c in given if c not in columns]
    if missing or label_col in given:
        raise InputError(f"feature_cols: column(s) {short_list(missing or [label_col])} "
                         f"{'not in' if missing else 'is the label of'} {where}, which has {short_list(columns, 12)}. "
                         "Fix the names, or leave feature_cols empty for every numeric column but the label.")
    return given


def _centralized(base, X, y, X_test, y_test, K: int, seed: int, threads) -> dict:
    """One model on all training rows, then K fold models on (K-1)/K one after another, under a thread limit."""
    from sklearn.model_selection import KFold
    from threadpoolctl import threadpool_limits

    out = {"threads": threads}
    with threadpool_limits(limits=threads):
        start = time.perf_counter()
        one = seeded_clone(base, seed).fit(X, y)
        out["wall_one"] = time.perf_counter() - start
        out["proba_one"] = one.predict_proba(X_test)[:, 1]
        out["acc_one"] = float(np.mean(one.predict(X_test) == y_test))
        start, fold_acc = time.perf_counter(), []
        for i, (rows, _) in enumerate(KFold(K, shuffle=True, random_state=STUDY_SPLIT_SEED).split(X)):
            model = seeded_clone(base, seed + i).fit(X[rows], y[rows])
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


def study_table(acc: dict, wall: dict, ensemble, K: int, member_acc: list[float], runs=(), *, published: bool = True,
                sample_note: str = "") -> pd.DataFrame:
    """One row per method. The centralized rows (and the published-only row) only when the baselines ran
    (``runs``, or their figures in ``acc``); ``published``: the published study's figures beside (the generated
    data only); ``sample_note``: what the baselines were fitted on, when a sample."""
    sampling = ensemble.sampling
    share = f"1/{K}" if sampling == "disjoint" else f"{K - 1}/{K}"
    info = ensemble.fit_info_
    rows = []
    if not runs and "centralized_one" in acc:
        runs = [{"threads": None, "acc_one": acc["centralized_one"], "wall_one": wall["centralized_one"],
                 "acc_folds": acc["centralized_folds"], "wall_folds": wall["centralized_folds"]}]
    on = f"; {sample_note}" if sample_note else ""
    for r in runs:
        how = f", {r['threads']} thread(s)" if len(runs) > 1 and r["threads"] else (
            ", all cores" if len(runs) > 1 else "")
        baseline = "; baseline" if len(runs) > 1 and r["wall_folds"] == wall["centralized_folds"] else ""
        rows += [("centralized_one", f"centralized: one model on all training rows{how}", r["acc_one"],
                  r["wall_one"], on[2:]),
                 ("centralized_folds", f"centralized: {K} fold models on {K - 1}/{K}, one after another{how} "
                  "(mean accuracy)", r["acc_folds"], r["wall_folds"], f"wall = all folds{baseline}{on}")]
    if runs:
        rows.append(("distributed", "fully distributed training (not run here)", np.nan, np.nan, "published only"))
    rows += [
        ("members", f"{K} members on {share} each, in parallel on Spark (mean accuracy)", acc["members"],
         wall["members"], f"members {min(member_acc):.4f}-{max(member_acc):.4f}; wall = all members"),
        ("mean", "ensemble: mean of probabilities", acc["mean"], np.nan, ""),
        ("median", "ensemble: median of probabilities", acc["median"], np.nan, ""),
        ("max", "ensemble: max of probabilities (per class, renormalized)", acc["max"], np.nan, ""),
        ("stacking", "ensemble: stacking (random forest on out-of-fold predictions)", acc["stacking"],
         info.get("wall_oof_s", 0.0) + info.get("wall_meta_s", 0.0), "wall = out-of-fold pass + meta fit"),
    ]
    return pd.DataFrame([(label, a, w, *(PUBLISHED[key] if published else ("", "")), note)
                         for key, label, a, w, note in rows],
                        columns=["method", "accuracy", "wall_s", "published_accuracy", "published_wall", "note"])


def result_line(n: int, acc: dict, wall: dict) -> str:
    """``RESULT n=... [acc_centralized=...] acc_mean=... ... wall_members_s=... [wall_centralized_s=...]`` (the
    centralized figures when the baselines ran)."""
    central = "centralized_folds" in acc
    return (f"RESULT n={n} " + (f"acc_centralized={acc['centralized_folds']:.4f} " if central else "")
            + f"acc_mean={acc['mean']:.4f} acc_median={acc['median']:.4f} acc_max={acc['max']:.4f} "
            f"acc_stacking={acc['stacking']:.4f} wall_members_s={wall['members']:.1f}"
            + (f" wall_centralized_s={wall['centralized_folds']:.1f}" if central else ""))


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
              wall: dict, *, n: int, learner: str, model_name: str, alias: str, experiment: str, source: str = ""):
    """The ensemble through ``tracking.log_estimator``: members' scores and times as metrics and a table, the
    combination rule as a param, the KDE plot, registered (once per configuration) with ``alias``."""
    ctx = tracking.configure(experiment=experiment or None)
    metrics = {f"accuracy_{k}": v for k, v in acc.items()}
    metrics.update({f"wall_{k}_s": v for k, v in wall.items()})
    for row in members.itertuples(index=False):
        metrics[f"member_{row.member}_validation_accuracy"] = row.validation_score
        metrics[f"member_{row.member}_fit_seconds"] = row.fit_seconds
        metrics[f"member_{row.member}_test_accuracy"] = row.test_accuracy
    params = {"combine": final.combine, "sampling": final.sampling, "n_members": final.n_members, "n_samples": n,
              "learner": learner, "seed": final.seed, "backend": final.fit_info_.get("backend"),
              "input_path": source or "(generated)", "n_features": X_test.shape[1]}
    data = f"input={source}|" if source else ""
    key = (f"fold-ensemble|{data}n={n}|k={final.n_members}|{final.sampling}|{final.combine}|{learner}|"
           f"seed={final.seed}")
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
                 "", f"data              {result.data_note}" if result.data_note else "",
                 f"KDE plot          {result.kde_png}"]
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
