"""Hyperparameter search, the pure part: no Spark, no MLflow, no network.

* ``make_candidates``: a ``ParameterGrid``-style dict or list of dicts, or seeded random
  distributions (``ParameterSampler`` with ``n_iter``).
* ``make_splitter`` / ``fold_splits``: k-fold, stratified, group or time-series CV through
  scikit-learn's own splitters and ``check_cv``, so the folds are ``GridSearchCV``'s.
* ``run_task``: one task = (candidate, fold): clone, ``set_params``, fit on the fold's train rows,
  score with scikit-learn scorer names (one or several) on its test rows.
* ``aggregate`` / ``best_of``: a ``cv_results_``-like table (params, split/mean/std test score
  per scorer, rank, mean fit and score time) and the best candidate, ranked on ``refit``.
* ``plan_phases``: the task schedule (balanced fold rounds, then the remainder by measured cost).
* ``search_group`` / ``search_stream``: the per-group search of one packed partition: every
  group's tasks run on that group's rows; the best candidate is refitted on all of them.
* ``load_dataset``: the staged dataset of a global search, verified against the SHA-256 of each staged file
  the driver recorded (``StagedDataError`` naming the file otherwise) and cached per Python worker.

Driver-side validation (``make_search_spec``) raises ``InputError`` for an unknown parameter
name (listing the valid ones), an empty grid, an unknown scoring name (listing the valid ones),
and ``check_fold_sizes`` for a group (or dataset) with fewer rows than folds (naming the group).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.base import clone

from manymodels.core import model_bytes
from manymodels.core.checks import check_estimator
from manymodels.core.estimators import is_classifier_estimator, seed_param_names
from manymodels.core.fitting import base_row, fit_arrays
from manymodels.core.keys import group_seed, key_text
from manymodels.core.packing import complete_groups, group_bounds
from manymodels.core.planning import assign_bins, partition_labels
from manymodels.core.schema import FIXED_COLUMNS
from manymodels.core.spec import FAILURE_POLICIES, TrainSpec
from manymodels.errors import InputError, short_list

CV_KINDS = ("kfold", "stratified", "group", "timeseries")
SINGLE_KEY = "score"  # sklearn's name of the only scorer of a single-metric search
COST_PARAMS = ("n_estimators", "max_iter", "n_iter", "num_boost_round", "iterations")
TRACEBACK_LINES = 8
GLOBAL_KEY = ("__global__",)


class SearchTaskError(RuntimeError):
    """A (candidate, fold [, group]) task failed under ``failure_policy="raise"``; the message names it."""


@dataclass(frozen=True)
class SearchSpec:
    """What to search: one frozen object passed to both sides of the pandas UDF.

    ``cv`` is an int (sklearn's default splitter: stratified for classifiers) or a scikit-learn
    splitter object; ``scoring`` holds sklearn scorer names (empty: the estimator's ``score``);
    ``refit`` is the key ranked on (``"score"`` for a single scorer, else one of ``scoring``).
    """

    estimator: object
    candidates: tuple
    feature_cols: tuple[str, ...]
    label_col: str
    cv: object = 5
    n_splits: int = 5
    scoring: tuple[str, ...] = ()
    refit: str = SINGLE_KEY
    cv_groups_col: str | None = None
    order_col: str | None = None
    group_cols: tuple[str, ...] = ()
    seed: int = 42
    failure_policy: str = "record"
    search_id: str = ""

    @property
    def score_keys(self) -> tuple[str, ...]:
        return (SINGLE_KEY,) if len(self.scoring) <= 1 else tuple(self.scoring)


# ---------------------------------------------------------------- candidates and validation

def make_candidates(param_grid=None, param_distributions=None, n_iter: int = 10, seed: int = 42) -> list[dict]:
    """Parameter sets from a grid (dict or list of dicts) or from distributions sampled with ``seed``."""
    from sklearn.model_selection import ParameterGrid, ParameterSampler

    if (param_grid is None) == (param_distributions is None):
        raise InputError("Pass exactly one of param_grid (a dict or list of dicts of value lists) or "
                         "param_distributions (with n_iter).")
    source, name = ((param_grid, "param_grid") if param_grid is not None
                    else (param_distributions, "param_distributions"))
    grids = list(source) if isinstance(source, (list, tuple)) else [source]
    if not grids or any(not isinstance(g, Mapping) or not g for g in grids):
        raise InputError(f"{name} is empty ({source!r}): expected at least one parameter with at least one value, "
                         'e.g. {"n_estimators": [10, 20, 50]}.')
    for g in grids:
        for k, v in g.items():
            if param_grid is not None and (isinstance(v, (str, bytes)) or not hasattr(v, "__len__")):
                raise InputError(f"{name}[{k!r}] is {v!r}: expected a list of values, e.g. [{v!r}].")
            if hasattr(v, "__len__") and len(v) == 0:
                raise InputError(f"{name}[{k!r}] is an empty list: the grid is empty. Give at least one value.")
    if param_grid is not None:
        return [dict(p) for p in ParameterGrid(grids)]
    if int(n_iter) < 1:
        raise InputError(f"n_iter={n_iter}: expected at least 1 sampled parameter set.")
    try:
        return [dict(p) for p in ParameterSampler(grids, int(n_iter), random_state=seed)]
    except (TypeError, ValueError) as exc:
        raise InputError(f"param_distributions cannot be sampled ({exc}): expected lists or scipy.stats "
                         "distributions (objects with rvs).") from exc


def check_param_names(estimator: object, candidates: list[dict]) -> None:
    valid = estimator.get_params(deep=True)
    unknown = sorted({k for c in candidates for k in c if k not in valid})
    if unknown:
        raise InputError(
            f"Unknown parameter(s) {short_list(unknown)} in the search space of {type(estimator).__name__}: "
            f"valid names are {short_list(sorted(valid), 60)}. Fix the name (nested parameters use step__param).")


def check_scoring(estimator: object, scoring, refit) -> tuple[tuple[str, ...], str]:
    """Scorer names (validated against sklearn's) and the key to rank and refit on."""
    from sklearn.metrics import get_scorer_names

    if scoring is None or scoring == "" or scoring == []:
        names: tuple[str, ...] = ()
    elif isinstance(scoring, str):
        names = tuple(s.strip() for s in scoring.split(",") if s.strip())
    else:
        names = tuple(scoring)
    valid = sorted(get_scorer_names())
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise InputError(f"Unknown scoring name(s) {short_list(unknown)}: valid scikit-learn scorer names are "
                         f"{', '.join(valid)}.")
    if len(set(names)) != len(names):
        raise InputError(f"scoring={list(names)} names a scorer twice: give each once.")
    if not names and not hasattr(estimator, "score"):
        raise InputError(f"scoring is empty and {type(estimator).__name__} has no score method: "
                         "pass e.g. scoring='r2'.")
    keys = (SINGLE_KEY,) if len(names) <= 1 else names
    if refit in (None, "", True):
        return names, keys[0]
    if len(names) == 1 and refit == names[0]:
        return names, SINGLE_KEY
    if refit not in keys:
        raise InputError(f"refit={refit!r} is not one of the scorers {list(names) or [SINGLE_KEY]}: "
                         "name the scorer to rank candidates on.")
    return names, refit


def make_splitter(cv, *, n_splits: int | None = None, shuffle: bool = False, seed: int = 42):
    """An int (sklearn's default: StratifiedKFold for classifiers, else KFold), a kind name, or a splitter."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold, TimeSeriesSplit

    if isinstance(cv, str) and cv.strip().isdigit():
        cv = int(cv)
    if isinstance(cv, bool):
        raise InputError(f"cv={cv!r}: expected a number of folds (>= 2), one of {CV_KINDS} or a splitter.")
    if isinstance(cv, (int, np.integer)):
        if cv < 2:
            raise InputError(f"cv={cv}: expected at least 2 folds.")
        return int(cv)
    if isinstance(cv, str):
        kind, n = cv.strip().lower(), int(n_splits or 5)
        if n < 2:
            raise InputError(f"n_splits={n}: expected at least 2 folds.")
        state = seed if shuffle else None
        makers = {"kfold": lambda: KFold(n, shuffle=shuffle, random_state=state),
                  "stratified": lambda: StratifiedKFold(n, shuffle=shuffle, random_state=state),
                  "group": lambda: GroupKFold(n), "timeseries": lambda: TimeSeriesSplit(n)}
        if kind not in makers:
            raise InputError(f"cv={cv!r}: expected a number of folds or one of {CV_KINDS}.")
        return makers[kind]()
    if hasattr(cv, "split") and hasattr(cv, "get_n_splits"):
        return cv
    raise InputError(f"cv={cv!r}: expected a number of folds, one of {CV_KINDS} or a scikit-learn splitter.")


def n_splits_of(splitter) -> int:
    if isinstance(splitter, int):
        return splitter
    try:
        return int(splitter.get_n_splits())
    except Exception as exc:  # noqa: BLE001 - e.g. LeaveOneGroupOut needs the groups
        raise InputError(f"cv={splitter!r} cannot tell its number of folds without the data ({exc}): use a "
                         "splitter with a fixed n_splits (KFold, StratifiedKFold, GroupKFold, "
                         "TimeSeriesSplit).") from exc


def _needs_groups(splitter) -> bool:
    return "Group" in type(splitter).__name__


def make_search_spec(*, estimator, feature_cols, label_col, param_grid=None, param_distributions=None,
                     n_iter: int = 10, cv=5, n_splits: int | None = None, shuffle: bool = False, scoring=None,
                     refit=None, cv_groups_col: str | None = None, order_col: str | None = None, group_cols=(),
                     seed: int = 42, failure_policy: str = "record", search_id: str = "") -> SearchSpec:
    """Validate everything that needs no data and return the frozen spec (raises ``InputError``)."""
    estimator = check_estimator(estimator)
    candidates = make_candidates(param_grid, param_distributions, n_iter, seed)
    check_param_names(estimator, candidates)
    names, refit_key = check_scoring(estimator, scoring, refit)
    splitter = make_splitter(cv, n_splits=n_splits, shuffle=shuffle, seed=seed)
    if _needs_groups(splitter) and not cv_groups_col:
        raise InputError(f"cv={type(splitter).__name__} splits by groups: pass cv_groups_col, the column holding "
                         "each row's CV group.")
    if failure_policy not in FAILURE_POLICIES:
        raise InputError(f"failure_policy={failure_policy!r}: expected one of {FAILURE_POLICIES}.")
    feature_cols = tuple(feature_cols)
    if not feature_cols:
        raise InputError("feature_cols is empty: expected at least one feature column.")
    roles = [label_col, *group_cols] + [c for c in (cv_groups_col, order_col) if c]
    overlap = sorted(set(feature_cols) & set(roles))
    if overlap:
        raise InputError(f"Column(s) {short_list(overlap)} are both features and label/group/order columns; "
                         "a column can have one role only.")
    return SearchSpec(estimator=estimator, candidates=tuple(candidates), feature_cols=feature_cols,
                      label_col=label_col, cv=splitter, n_splits=n_splits_of(splitter), scoring=names,
                      refit=refit_key, cv_groups_col=cv_groups_col, order_col=order_col,
                      group_cols=tuple(group_cols), seed=seed, failure_policy=failure_policy, search_id=search_id)


def check_fold_sizes(sizes: pd.DataFrame, group_cols, n_splits: int) -> None:
    """``sizes``: the group columns and ``count`` (one row per group; no group columns for a global search)."""
    small = sizes[sizes["count"] < n_splits]
    if not len(small):
        return
    if not group_cols:
        raise InputError(f"The dataset has {int(small['count'].iloc[0])} rows, fewer than the {n_splits} CV folds: "
                         "lower cv or pass more rows.")
    shown = [f"{key_text(tuple(group_cols), tuple(r[c] for c in group_cols))} ({int(r['count'])} rows)"
             for _, r in small.head(5).iterrows()]
    more = f" and {len(small) - 5} more" if len(small) > 5 else ""
    raise InputError(f"Group(s) {'; '.join(shown)}{more} have fewer rows than the {n_splits} CV folds: every "
                     f"group needs at least {n_splits} rows. Lower cv, or drop those groups "
                     f"(e.g. keep groups with count >= {n_splits}).")


# ---------------------------------------------------------------- one task

@dataclass
class Dataset:
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None
    splits: list = field(default_factory=list)


def prepare_dataset(pdf: pd.DataFrame, spec: SearchSpec) -> Dataset:
    """Rows with a label, ordered by ``order_col`` when given, and the folds of ``spec.cv`` over them."""
    pdf = pdf[pdf[spec.label_col].notna()]
    if spec.order_col:
        pdf = pdf.sort_values(spec.order_col, kind="stable")
    X = pdf.loc[:, list(spec.feature_cols)].to_numpy()
    y = pdf[spec.label_col].to_numpy()
    groups = pdf[spec.cv_groups_col].to_numpy() if spec.cv_groups_col else None
    return Dataset(X, y, groups, fold_splits(spec, X, y, groups))


def fold_splits(spec: SearchSpec, X, y, groups=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The folds exactly as ``GridSearchCV`` makes them: ``check_cv(cv, y, classifier=...)``."""
    from sklearn.model_selection import check_cv

    cv = check_cv(spec.cv, y, classifier=is_classifier_estimator(spec.estimator))
    return [(np.asarray(tr), np.asarray(te)) for tr, te in cv.split(X, y, groups)]


def seeded_estimator(spec: SearchSpec, key: tuple | None = None) -> object:
    """Global search: ``random_state`` params left at None get a seed from ``spec.seed`` (ints are kept, so
    results equal GridSearchCV's). Per group: every ``random_state`` is the group's seed, as in training."""
    model = clone(spec.estimator)
    names = seed_param_names(model)
    if key is None:
        params = model.get_params(deep=True)
        names = [n for n in names if params[n] is None]
    if names:
        model.set_params(**{n: group_seed(spec.seed, key or GLOBAL_KEY) for n in names})
    return model


def make_scorers(spec: SearchSpec, estimator: object) -> dict:
    from sklearn.metrics import check_scoring as sk_check_scoring
    from sklearn.metrics import get_scorer

    if not spec.scoring:
        return {SINGLE_KEY: sk_check_scoring(estimator)}
    return {k: get_scorer(n) for k, n in zip(spec.score_keys, spec.scoring)}


def task_columns(spec: SearchSpec) -> list[tuple[str, str]]:
    """(column, Spark DDL type) of one task's result row."""
    cols = [("task_id", "bigint"), ("candidate", "bigint"), ("fold", "bigint"), ("status", "string"),
            ("error", "string"), ("fit_time", "double"), ("score_time", "double"), ("n_train", "bigint"),
            ("n_test", "bigint")]
    return cols + [(f"test_{k}", "double") for k in spec.score_keys] + [
        ("task_attempt", "string"), ("worker_pid", "bigint"), ("data_loads", "bigint")]


def run_task(spec: SearchSpec, data: Dataset, estimator, scorers: dict, candidate: int, fold: int,
             where: str = "") -> dict:
    """Fit candidate ``candidate`` on fold ``fold``'s train rows and score it on its test rows."""
    train, test = data.splits[fold]
    params = spec.candidates[candidate]
    row = {"candidate": candidate, "fold": fold, "status": "ok", "error": None, "fit_time": 0.0,
           "score_time": 0.0, "n_train": len(train), "n_test": len(test)}
    row.update({f"test_{k}": float("nan") for k in scorers})
    try:
        model = clone(estimator).set_params(**clone(params, safe=False))
        start = time.perf_counter()
        model.fit(data.X[train], data.y[train])
        row["fit_time"] = time.perf_counter() - start
        start = time.perf_counter()
        X_test, y_test = data.X[test], data.y[test]
        row.update({f"test_{k}": float(s(model, X_test, y_test)) for k, s in scorers.items()})
        row["score_time"] = time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001 - the policy decides
        text = f"candidate {candidate} {json_params(params)}, fold {fold}{where}"
        if spec.failure_policy == "raise":
            raise SearchTaskError(f"Search task failed for {text}: {type(exc).__name__}: {exc}. "
                                  "Use failure_policy='record' to score it as NaN and go on.") from exc
        tail = "".join(traceback.format_exception(exc)[-TRACEBACK_LINES:])
        row.update(status="failed", error=f"{type(exc).__name__}: {exc} ({text})\n{tail}")
    return row


def json_params(params: dict) -> str:
    return json.dumps({k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)
                       for k, v in params.items()}, sort_keys=True)


# ---------------------------------------------------------------- results

def _rank(means: np.ndarray) -> np.ndarray:
    """sklearn's rule: NaN means tie with the worst; all NaN ranks everything 1."""
    if np.isnan(means).all():
        return np.ones_like(means, dtype=np.int32)
    filled = np.where(np.isnan(means), np.nanmin(means) - 1, means)
    return rankdata(-filled, method="min").astype(np.int32)


def aggregate(tasks: pd.DataFrame, spec: SearchSpec) -> pd.DataFrame:
    """A ``cv_results_``-like table, one row per candidate in candidate order.

    ``tasks``: rows of ``run_task`` (duplicates of a (candidate, fold) from retried tasks are dropped;
    a missing or failed one scores NaN). Columns: params, param_<name>, mean/std fit and score time,
    split<i>_test_<k>, mean/std/rank_test_<k> per scorer key, n_failed, error (the first failure).
    """
    n_c, n_f = len(spec.candidates), spec.n_splits
    tasks = tasks.drop_duplicates(["candidate", "fold"], keep="first")
    cand, fold = tasks["candidate"].to_numpy(dtype=np.int64), tasks["fold"].to_numpy(dtype=np.int64)

    def grid(col):
        out = np.full((n_c, n_f), np.nan)
        out[cand, fold] = tasks[col].to_numpy(dtype=np.float64)
        return out

    cv = pd.DataFrame({"params": list(spec.candidates)})
    for name in dict.fromkeys(k for c in spec.candidates for k in c):
        cv[f"param_{name}"] = pd.Series([c.get(name) for c in spec.candidates], dtype=object)
    for col in ("fit_time", "score_time"):
        g = grid(col)
        cv[f"mean_{col}"], cv[f"std_{col}"] = np.nanmean(g, axis=1), np.nanstd(g, axis=1)
    for k in spec.score_keys:
        g = grid(f"test_{k}")
        for f in range(n_f):
            cv[f"split{f}_test_{k}"] = g[:, f]
        means = np.average(g, axis=1)
        cv[f"mean_test_{k}"] = means
        cv[f"std_test_{k}"] = np.sqrt(np.average((g - means[:, None]) ** 2, axis=1))
        cv[f"rank_test_{k}"] = _rank(means)
    failed = tasks[tasks["status"] != "ok"]
    done = np.zeros((n_c, n_f), dtype=bool)
    done[cand, fold] = True
    cv["n_failed"] = (~done).sum(axis=1) + np.bincount(failed["candidate"].to_numpy(dtype=np.int64), minlength=n_c)
    first_error = failed.sort_values(["candidate", "fold"]).drop_duplicates("candidate").set_index("candidate")["error"]
    cv["error"] = [first_error.get(i) for i in range(n_c)]
    return cv


def best_of(cv: pd.DataFrame, spec: SearchSpec, where: str = "") -> tuple[int, dict, float]:
    """(index, params, mean score) of the best candidate on ``spec.refit`` (the first of ties, as sklearn)."""
    means = cv[f"mean_test_{spec.refit}"].to_numpy()
    if np.isnan(means).all():
        errors = [e for e in cv["error"] if e]
        raise SearchTaskError(f"Every candidate failed or scored NaN{where}: first error: "
                              f"{errors[0] if errors else 'a fold is missing'}")
    index = int(cv[f"rank_test_{spec.refit}"].to_numpy().argmin())
    return index, dict(spec.candidates[index]), float(means[index])


# ---------------------------------------------------------------- scheduling

def candidate_cost(params: dict) -> float:
    """A rough relative fit cost: the product of iteration-count parameters (n_estimators, max_iter...)."""
    cost = 1.0
    for name, value in params.items():
        if name.rsplit("__", 1)[-1] in COST_PARAMS and isinstance(value, (int, float)) and value > 0:
            cost *= float(value)
    return cost


def plan_phases(spec: SearchSpec, n_bins: int) -> list[list[int]]:
    """The folds run in each phase. Each bin gets the same number of folds of every candidate in the first
    phase (balanced whatever the candidates cost); the remaining folds, if any, run in a second phase
    scheduled on the fit times measured in the first. Fewer folds than bins: one phase, estimated costs."""
    k = spec.n_splits
    full = (k // n_bins) * n_bins
    if full in (0, k):
        return [list(range(k))]
    return [list(range(full)), list(range(full, k))]


def plan_tasks(spec: SearchSpec, folds: list[int], n_bins: int, measured: dict[int, float] | None = None,
               round_robin: bool = False) -> pd.DataFrame:
    """One row per (candidate, fold) task: ``task_id``, ``candidate``, ``fold``, ``cost``, ``bin`` (0..n_bins-1),
    ``label`` (lands on partition ``bin`` under ``repartition(n_bins, label)``) and ``order`` (largest first).

    ``round_robin``: fold ``f`` goes to bin ``f % n_bins``; otherwise longest-processing-time bin packing on
    ``measured`` fit seconds per candidate (or ``candidate_cost`` when not measured)."""
    rows = [(c * spec.n_splits + f, c, f, (measured or {}).get(c, candidate_cost(p)))
            for c, p in enumerate(spec.candidates) for f in folds]
    tasks = pd.DataFrame(rows, columns=["task_id", "candidate", "fold", "cost"])
    if round_robin:
        tasks["bin"] = tasks["fold"] % n_bins
    else:
        scaled = (tasks["cost"] / max(tasks["cost"].max(), 1e-12) * 1e9).round().astype(np.int64)
        tasks["bin"] = assign_bins(pd.DataFrame({"count": scaled}), n_bins)
    tasks["label"] = np.asarray(partition_labels(n_bins), dtype=np.int32)[tasks["bin"].to_numpy()]
    tasks = tasks.sort_values(["bin", "cost", "task_id"], ascending=[True, False, True], kind="stable")
    tasks["order"] = np.arange(len(tasks), dtype=np.int64)
    return tasks.reset_index(drop=True)


# ---------------------------------------------------------------- global search: staged data, cached per worker

class StagedDataError(SearchTaskError):
    """The staged data a worker found is not the data the driver staged (edited, replaced, missing or extra files)."""


@dataclass(frozen=True)
class Staged:
    """One search run's staged data: ``path`` (a Parquet file, or a folder of Spark part files) written for this run
    alone, ``checksums`` ((file name, SHA-256 of its bytes), ...) recorded by the driver after the write, the
    content ``fingerprint`` and ``search_id`` (named in errors). Small: it travels in the UDF closure."""

    path: str
    fingerprint: str
    n_rows: int
    checksums: tuple[tuple[str, str], ...] = ()
    search_id: str = ""


_DATASETS: "OrderedDict[tuple, Dataset]" = OrderedDict()
_CACHE_SIZE = 2
LOADS = {"count": 0}  # datasets read from storage by this process (tests check the cache with it)
_HASH_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def staged_files(path: str) -> list[Path]:
    """The data files of a staged dataset in read order: the file itself, or a folder's visible files sorted by
    name (Spark's part files in partition order; ``_SUCCESS``, ``_committed_*`` and ``.crc`` files excluded)."""
    p = Path(path)
    if not p.is_dir():
        return [p]
    return sorted((f for f in p.iterdir() if f.is_file() and not f.name.startswith((".", "_"))), key=lambda f: f.name)


def file_checksums(path: str) -> tuple[tuple[str, str], ...]:
    """(file name, SHA-256) of every data file of a staged dataset: what the driver records after writing it."""
    out = []
    for f in staged_files(path):
        digest = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
                digest.update(chunk)
        out.append((f.name, digest.hexdigest()))
    return tuple(out)


def _refuse(path: str, search_id: str, problem: str) -> StagedDataError:
    return StagedDataError(
        f"The staged data of search {search_id or '(unnamed)'} at {path} is not what the driver wrote: {problem}. "
        "Something changed or deleted it while the search ran (another job writing to the staging folder, or a "
        "cleanup). Rerun the search with a staging folder no other job writes to (search(..., staging=...) or "
        "MANYMODELS_STAGING).")


def read_staged(path: str, columns: list[str], checksums: tuple[tuple[str, str], ...], *,
                search_id: str = "") -> pd.DataFrame:
    """A staged dataset (one Parquet file, or a folder of Spark part files read in partition order), verified:
    the data files must be exactly those of ``checksums`` and each file's bytes must hash to its SHA-256.
    The bytes that are hashed are the bytes that are parsed. Raises ``StagedDataError`` naming the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not checksums:
        raise _refuse(path, search_id, "no checksums were recorded for it, so it cannot be verified")
    p = Path(path)
    if not p.exists():
        raise _refuse(path, search_id, "it does not exist any more")
    expected = dict(checksums)
    found = {f.name: f for f in staged_files(path)} if p.is_dir() else {p.name: p}
    missing = [n for n in expected if n not in found]
    extra = sorted(n for n in found if n not in expected)
    if missing:
        raise _refuse(path, search_id, f"file(s) {short_list(missing)} are missing")
    if extra:
        raise _refuse(path, search_id, f"unexpected file(s) {short_list(extra)} appeared")
    tables = []
    for name, sha in checksums:
        data = found[name].read_bytes()
        got = sha256_bytes(data)
        if got != sha:
            raise _refuse(path, search_id, f"file {name!r} has SHA-256 {got[:16]}... where {sha[:16]}... was recorded")
        tables.append(pq.read_table(pa.BufferReader(data), columns=columns))
    return pa.concat_tables(tables).to_pandas()


def staged_columns(spec: SearchSpec) -> list[str]:
    return list(dict.fromkeys([*spec.feature_cols, spec.label_col]
                              + [c for c in (spec.cv_groups_col, spec.order_col) if c]))


def dataset_key(staged: Staged, spec: SearchSpec) -> tuple:
    """The worker cache key: the staged bytes (path and checksums) and everything ``prepare_dataset`` and
    ``fold_splits`` use: columns, the splitter, the task (``check_cv`` stratifies an int cv for classifiers
    only), the seed and the number of folds."""
    task = "classifier" if is_classifier_estimator(spec.estimator) else "other"
    return (staged.path, staged.fingerprint, staged.checksums, spec.feature_cols, spec.label_col,
            repr(spec.cv), spec.n_splits, spec.cv_groups_col, spec.order_col, task, spec.seed)


def load_dataset(staged: Staged, spec: SearchSpec) -> Dataset:
    """The staged dataset and its folds, read and verified once per Python worker (see ``dataset_key``)."""
    key = dataset_key(staged, spec)
    if key in _DATASETS:
        _DATASETS.move_to_end(key)
        return _DATASETS[key]
    frame = read_staged(staged.path, staged_columns(spec), staged.checksums, search_id=staged.search_id)
    data = prepare_dataset(frame, spec)
    LOADS["count"] += 1
    _DATASETS[key] = data
    while len(_DATASETS) > _CACHE_SIZE:
        _DATASETS.popitem(last=False)
    return data


def run_task_batches(batches: Iterator[pd.DataFrame], *, spec: SearchSpec, staged: Staged,
                     attempt: str = "") -> Iterator[pd.DataFrame]:
    """``mapInPandas`` body of a global search: the task rows of one partition (largest first) in, one result
    row per task out. The staged dataset is read and verified at most once per Python worker."""
    data = load_dataset(staged, spec)
    estimator = seeded_estimator(spec)
    scorers = make_scorers(spec, estimator)
    columns = [c for c, _ in task_columns(spec)]
    for batch in batches:
        for task_id, candidate, fold in batch[["task_id", "candidate", "fold"]].itertuples(index=False):
            row = run_task(spec, data, estimator, scorers, int(candidate), int(fold))
            # worker_pid and data_loads show the dataset was read once per Python worker, not once per task
            row.update(task_id=int(task_id), task_attempt=attempt, worker_pid=os.getpid(), data_loads=LOADS["count"])
            yield pd.DataFrame([row], columns=columns)


def refit_batches(batches: Iterator[pd.DataFrame], *, spec: SearchSpec, staged: Staged,
                  candidate: int) -> Iterator[pd.DataFrame]:
    """``mapInPandas`` body of the global refit: the best candidate fitted on all rows (with feature names)."""
    for _ in batches:
        pass
    data = load_dataset(staged, spec)
    model = clone(seeded_estimator(spec)).set_params(**clone(dict(spec.candidates[candidate]), safe=False))
    start = time.perf_counter()
    model.fit(pd.DataFrame(data.X, columns=list(spec.feature_cols)), data.y)
    seconds = time.perf_counter() - start
    blob = model_bytes.dumps(model)
    yield pd.DataFrame({"model": [blob], "model_sha256": [model_bytes.sha256(blob)], "fit_seconds": [seconds]})


def search_local(pdf: pd.DataFrame, spec: SearchSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every task in this process, one after another: ``(task rows, cv_results)``. The reference the Spark
    path is tested against, and the sequential baseline."""
    data = prepare_dataset(pdf, spec)
    estimator = seeded_estimator(spec)
    scorers = make_scorers(spec, estimator)
    rows = [run_task(spec, data, estimator, scorers, c, f)
            for c in range(len(spec.candidates)) for f in range(spec.n_splits)]
    tasks = pd.DataFrame(rows)
    return tasks, aggregate(tasks, spec)


def search_thread_pool(pdf: pd.DataFrame, spec: SearchSpec, n_threads: int = 2) -> pd.DataFrame:
    """The driver thread-pool approach (``concurrent.futures`` over (params, fold)): the cv_results table."""
    from concurrent.futures import ThreadPoolExecutor

    data = prepare_dataset(pdf, spec)
    estimator = seeded_estimator(spec)
    scorers = make_scorers(spec, estimator)
    pairs = [(c, f) for c in range(len(spec.candidates)) for f in range(spec.n_splits)]
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        rows = list(pool.map(lambda cf: run_task(spec, data, estimator, scorers, *cf), pairs))
    return aggregate(pd.DataFrame(rows), spec)


# ---------------------------------------------------------------- per-group search

def group_cv_columns(spec: SearchSpec) -> list[tuple[str, str]]:
    """(column, Spark DDL type) of the cv-result part of a per-group search row."""
    cols = [("candidate", "bigint"), ("cv_params", "string"), ("cv_error", "string"), ("n_failed", "bigint"),
            ("mean_fit_time", "double"), ("std_fit_time", "double"), ("mean_score_time", "double"),
            ("std_score_time", "double")]
    for k in spec.score_keys:
        cols += [(f"split{f}_test_{k}", "double") for f in range(spec.n_splits)]
        cols += [(f"mean_test_{k}", "double"), (f"std_test_{k}", "double"), (f"rank_test_{k}", "bigint")]
    return cols


REFIT_ROW = "refit_row"


def group_result_columns(spec: SearchSpec, key_ddl: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Keys, ``refit_row`` (true on the one row per group holding its model-table row), cv columns,
    model-table columns."""
    return key_ddl + [(REFIT_ROW, "boolean")] + group_cv_columns(spec) + [(c, t) for c, t, _ in FIXED_COLUMNS]


def _group_order(pdf: pd.DataFrame, spec: SearchSpec) -> pd.DataFrame:
    """Rows after a shuffle arrive in any order: order them by ``order_col``, or else by a hash of each row's
    content, so the folds depend on the data alone. A hash, not a sort by value: sorted labels would make
    every unshuffled fold a contiguous label range (a badly biased CV)."""
    if spec.order_col:
        return pdf.sort_values(spec.order_col, kind="stable", ignore_index=True)
    digest = pd.util.hash_pandas_object(pdf[[spec.label_col, *spec.feature_cols]], index=False).to_numpy()
    return pdf.iloc[np.argsort(digest, kind="stable")].reset_index(drop=True)


def search_group(key: tuple, pdf: pd.DataFrame, *, spec: SearchSpec, train_spec: TrainSpec,
                 attempt: str = "") -> list[dict]:
    """All (candidate x fold) tasks of one group on its rows, then the best candidate refitted on all of them.

    Returns one cv row per candidate (``refit_row`` false) and the group's model-table row (``refit_row``
    true, from ``fitting.fit_arrays`` with the best parameters and ``holdout_fraction=0``). When no
    candidate can be scored the model row is ``failed`` with the first error (``raise`` policy: raises).
    """
    where = f", group {key_text(spec.group_cols, key)}"
    keys = dict(zip(spec.group_cols, key))
    try:
        data = prepare_dataset(_group_order(pdf, spec), spec)
    except Exception as exc:  # noqa: BLE001 - e.g. a class with fewer members than folds
        if spec.failure_policy == "raise":
            raise SearchTaskError(f"Cannot split{where} into {spec.n_splits} folds: {exc}") from exc
        row = base_row(train_spec, key, len(pdf), group_seed(spec.seed, key), attempt)
        row.update(keys, status="failed", error=f"{type(exc).__name__}: {exc} (splitting{where})")
        return [{**row, REFIT_ROW: True}]
    estimator = seeded_estimator(spec, key)
    scorers = make_scorers(spec, estimator)
    tasks = pd.DataFrame([run_task(spec, data, estimator, scorers, c, f, where)
                          for c in range(len(spec.candidates)) for f in range(spec.n_splits)])
    cv = aggregate(tasks, spec)
    rows = []
    for i, r in enumerate(cv.drop(columns=[c for c in cv if c.startswith("param")]).to_dict("records")):
        error = r.pop("error")
        rows.append({**keys, REFIT_ROW: False, **r, "candidate": i, "cv_params": json_params(spec.candidates[i]),
                     "cv_error": error})
    try:
        _, params, _ = best_of(cv, spec, where)
    except SearchTaskError as exc:
        if spec.failure_policy == "raise":
            raise
        row = base_row(train_spec, key, len(data.y), group_seed(spec.seed, key), attempt)
        row.update(keys, status="failed", error=str(exc))
        return rows + [{**row, REFIT_ROW: True}]
    best = clone(spec.estimator).set_params(**clone(params, safe=False))
    model_row = fit_arrays(key, data.X, data.y, spec=replace(train_spec, estimator=best), n_input=len(pdf),
                           attempt=attempt)
    return rows + [{**model_row, REFIT_ROW: True}]


def group_frame(rows: list[dict], spec: SearchSpec, key_cols: tuple[str, ...]) -> pd.DataFrame:
    """Rows of ``search_group`` as a frame with the union schema's columns (nullable integers)."""
    cols = [c for c, _ in group_result_columns(spec, [(k, "") for k in key_cols])]
    frame = pd.DataFrame.from_records(rows, columns=cols)
    ints = [c for c, t in group_cv_columns(spec) if t == "bigint"] + [c for c, t, _ in FIXED_COLUMNS if t == "bigint"]
    for c in ints:  # object columns of ints and None: Arrow makes nullable int64 (extension dtypes come out chunked)
        frame[c] = pd.Series([None if pd.isna(v) else int(v) for v in frame[c]], dtype=object, index=frame.index)
    typed = group_cv_columns(spec) + [(c, t) for c, t, _ in FIXED_COLUMNS]
    for c in [c for c, t in typed if t == "double"]:
        frame[c] = frame[c].astype("float64")
    for c in [c for c, t in typed if t in ("string", "binary")]:  # all-None columns must not turn into NaN floats
        frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
    return frame


def search_stream(batches: Iterator[pd.DataFrame], *, spec: SearchSpec,
                  train_spec: TrainSpec, attempt: str = "") -> Iterator[pd.DataFrame]:
    """``mapInPandas`` body of a per-group search over sorted partitions (groups contiguous; a group may span
    batches and is carried over to the next one)."""
    keys = spec.group_cols
    for frame in complete_groups(batches, keys):
        rows = []
        for key, s, e in group_bounds(frame, keys):
            rows += search_group(key, frame.iloc[s:e], spec=spec, train_spec=train_spec, attempt=attempt)
        yield group_frame(rows, spec, keys)


def cv_table(rows: pd.DataFrame, spec: SearchSpec) -> pd.DataFrame:
    """Per-group cv rows as read back (``cv_params`` JSON) -> ``params`` dicts and ``param_<name>`` columns."""
    out = rows.drop(columns=[REFIT_ROW], errors="ignore").rename(columns={"cv_params": "params", "cv_error": "error"})
    params = [json.loads(p) for p in out["params"]]
    out["params"] = params
    for name in dict.fromkeys(k for c in spec.candidates for k in c):
        out[f"param_{name}"] = pd.Series([p.get(name) for p in params], dtype=object, index=out.index)
    return out


def loggable(cv: pd.DataFrame) -> pd.DataFrame:
    """cv_results with JSON params and string parameter columns (Parquet/CSV friendly)."""
    out = cv.copy()
    out["params"] = [json_params(p) if isinstance(p, dict) else p for p in out["params"]]
    for c in [c for c in out if c.startswith("param_")]:
        out[c] = out[c].map(lambda v: None if v is None else str(v))
    return out
