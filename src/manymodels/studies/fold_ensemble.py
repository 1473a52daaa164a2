"""The fold-ensemble study the notebook, the CLI (``manymodels fold_ensemble``) and the bench run: K members on
Spark against one model on all rows and a thread pool, on a fixed synthetic classification task, with accuracy,
wall times, a KDE plot of the predicted probabilities and, when asked, the MLflow run of the final ensemble."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from manymodels import tracking
from manymodels.core.ensemble import FoldEnsembleClassifier
from manymodels.core.estimators import load_estimator, seeded_clone
from manymodels.core.folds import COMBINES
from manymodels.errors import InputError
from manymodels.settings import project_home

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
