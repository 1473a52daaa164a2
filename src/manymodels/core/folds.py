"""The arithmetic of fold ensembles (pure numpy): rows hashed to folds, which rows each member trains on, member
seeds, combining member outputs (mean, median, max, stacking) and the out-of-fold sums that score them.

Folds come from a hash of each row's values, not from its position, so a member sees the same rows whether
the data arrives as one pandas frame or as Spark partitions in any order. ``fit_member`` fits one member; the
Spark layer (``spark.ensembles``) runs one per task."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from manymodels.core.estimators import seeded_clone
from manymodels.core.keys import group_seed

SAMPLINGS = ("disjoint", "complement")


COMBINES = ("mean", "median", "max", "stacking")


def label_key(y) -> np.ndarray:
    """Labels in the form that is hashed: numbers as float64 (1 and 1.0 agree), anything else as text."""
    y = np.asarray(y)
    return y.astype(np.float64) if y.dtype.kind in "biuf" else y.astype(str).astype(object)


def row_hashes(X: np.ndarray, y) -> np.ndarray:
    """A uint64 per row from its feature values (as float64) and its label; independent of row order."""
    frame = pd.DataFrame(np.asarray(X, dtype=np.float64))
    frame["_y"] = label_key(y)
    return pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)


# splitmix64's multipliers: a row hash mixed with a salt, well spread over 64 bits
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(h: np.ndarray, salt: int) -> np.ndarray:
    """splitmix64 finalizer of ``h + salt``: decorrelates the fold and the meta sample from the raw hash."""
    with np.errstate(over="ignore"):
        z = h + np.uint64(salt)
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def folds_of(h: np.ndarray, seed: int, n_members: int) -> np.ndarray:
    """The fold (0..K-1) of each row: a function of its hash and the seed only."""
    return (_mix(h, group_seed(seed, "folds")) % np.uint64(n_members)).astype(np.int64)


def meta_sample(h: np.ndarray, seed: int, fraction: float) -> np.ndarray:
    """Rows used to fit the stacking meta-model: a hash-based sample of about ``fraction`` of the rows."""
    if fraction >= 1:
        return np.ones(len(h), dtype=bool)
    u = (_mix(h, group_seed(seed, "meta")) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return u < fraction


def member_seed(seed: int, member: int) -> int:
    return group_seed(seed, ("member", int(member)))


def trains_on(fold: np.ndarray, member: int, sampling: str) -> np.ndarray:
    """Boolean mask of the rows member ``member`` is fitted on."""
    return fold == member if sampling == "disjoint" else fold != member


def member_rows(h: np.ndarray, fold: np.ndarray, member: int, sampling: str) -> np.ndarray:
    """Indices of member ``member``'s training rows, in hash order (the canonical order)."""
    idx = np.flatnonzero(trains_on(fold, member, sampling))
    return idx[np.argsort(h[idx], kind="stable")]


def member_outputs(members, X: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    """``(K, n, C)``: each member's class probabilities aligned to ``classes`` (C = 1 for regression)."""
    if classes is None:
        return np.stack([np.asarray(m.predict(X), dtype=np.float64)[:, None] for m in members])
    return np.stack([aligned_proba(m, X, classes) for m in members])


def aligned_proba(model, X, classes: np.ndarray) -> np.ndarray:
    """``predict_proba`` with one column per class of the ensemble (a member may have seen fewer classes)."""
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    own = np.asarray(model.classes_)
    if len(own) == len(classes) and np.array_equal(own, classes):
        return proba
    out = np.zeros((proba.shape[0], len(classes)))
    out[:, np.searchsorted(classes, own)] = proba
    return out


def combine_outputs(P: np.ndarray, rule: str, classifier: bool) -> np.ndarray:
    """Mean / median / max over members (axis 0); class probabilities are renormalized per row."""
    out = {"mean": np.mean, "median": np.median, "max": np.max}[rule](P, axis=0)
    if classifier:
        total = out.sum(axis=1, keepdims=True)
        out = np.where(total > 0, out / np.where(total > 0, total, 1), 1.0 / out.shape[1])
    return out


def meta_view(P: np.ndarray) -> np.ndarray:
    """Binary probabilities carry one free number per member: keep the positive class only."""
    return P[:, :, 1:] if P.shape[2] == 2 else P


def stack_features(P: np.ndarray, used: np.ndarray, width: int) -> np.ndarray:
    """Meta-model input: per output column, the sorted predictions of the members that did not train on
    the row (``used[k, i]`` is True when member k trained on row i); exactly ``width`` of them per row."""
    V = np.where(used[:, :, None], np.nan, meta_view(P))
    V = np.sort(V, axis=0)[:width]  # NaN sorts last: the members that trained on the row drop out
    return V.transpose(1, 2, 0).reshape(V.shape[1], -1)


def stack_width(n_members: int, sampling: str) -> int:
    return n_members - 1 if sampling == "disjoint" else 1


def used_mask(fold: np.ndarray, n_members: int, sampling: str) -> np.ndarray:
    return np.stack([trains_on(fold, k, sampling) for k in range(n_members)])


def oof_sums(P: np.ndarray, y: np.ndarray, used: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    """Per member, the sums that give its validation score on the rows it did not train on:
    classification ``[n, correct]``; regression ``[n, sse, sum_y, sum_y2]``. Shape ``(K, 2 or 4)``."""
    rows = []
    for k in range(P.shape[0]):
        oof = ~used[k]
        if classes is not None:
            pred = classes[np.argmax(P[k][oof], axis=1)]
            rows.append([oof.sum(), np.sum(pred == y[oof])])
        else:
            yk = y[oof].astype(np.float64)
            rows.append([oof.sum(), np.sum((P[k][oof, 0] - yk) ** 2), yk.sum(), np.sum(yk * yk)])
    return np.asarray(rows, dtype=np.float64)


def scores_from_sums(sums: np.ndarray, classifier: bool) -> np.ndarray:
    """Accuracy (classification) or R^2 (regression) per member from ``oof_sums`` (added over batches)."""
    n = sums[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        if classifier:
            return np.where(n > 0, sums[:, 1] / n, np.nan)
        sst = sums[:, 3] - sums[:, 2] ** 2 / n
        return np.where((n > 0) & (sst > 0), 1.0 - sums[:, 1] / sst, np.nan)


def fit_member(ensemble, X: np.ndarray, y: np.ndarray, member: int):
    """Fit member ``member`` on its rows (already in canonical order): ``(model, fit seconds)``."""
    model = seeded_clone(ensemble.base_estimator(), member_seed(ensemble.seed, member))
    start = time.perf_counter()
    model.fit(X, y)
    return model, time.perf_counter() - start

