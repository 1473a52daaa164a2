"""Fold and sample ensembles as ordinary scikit-learn estimators (pure numpy/pandas: no Spark, no MLflow).

K members are clones of one estimator, each fitted on its own part of the training rows:

- ``sampling="disjoint"``: member k on fold k only (1/K of the rows);
- ``sampling="complement"``: member k on every fold but k ((K-1)/K of the rows).

A row's fold is a hash of its content (features and label) mixed with ``seed``, so the split does not
depend on row order or on which Spark executor saw the row, and each member sees its rows in hash order
(results do not depend on arrival order). Member k's seed is ``keys.group_seed(seed, ("member", k))``.

Combination (``combine``): ``mean``, ``median`` or ``max`` of the members' class probabilities (per class,
renormalized) or predictions (regression); or ``stacking``: a meta-model fitted on out-of-fold predictions.
The meta-model's input for a row is the sorted predictions of the members that did *not* train on it: the
K-1 other members under ``disjoint``, the one left-out member under ``complement``. At prediction time the
meta-model is applied to every such subset (one per fold) and its outputs are averaged, so it always sees
inputs distributed as in training. It never sees a member's prediction on that member's training rows, and
never the rows passed to ``predict`` (the evaluation data).

Members' out-of-fold predictions also give each member's validation score (accuracy or R^2 on the rows it
did not train on). ``fit`` on pandas / numpy trains members one after another here; ``fit`` on a Spark
DataFrame trains them in parallel (one Spark task per member, see ``spark.ensembles``) and returns
the same estimator, which predicts without Spark.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import get_tags
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from manymodels.core.estimators import is_classifier_estimator, seeded_clone
from manymodels.core.folds import (
    COMBINES,
    SAMPLINGS,
    aligned_proba,
    combine_outputs,
    fit_member,
    folds_of,
    member_outputs,
    member_rows,
    member_seed,
    meta_sample,
    oof_sums,
    row_hashes,
    scores_from_sums,
    stack_features,
    stack_width,
    trains_on,
    used_mask,
)
from manymodels.core.keys import group_seed
from manymodels.errors import InputError

# ---------------------------------------------------------------- row hashing, folds, seeds (both paths use these)


# ---------------------------------------------------------------- predictions and their combination


# ---------------------------------------------------------------- out-of-fold pass (per batch in Spark, whole here)


# ---------------------------------------------------------------- the estimators

class _FoldEnsemble(BaseEstimator):
    """Shared implementation; use ``FoldEnsembleClassifier`` or ``FoldEnsembleRegressor``.

    Parameters: ``estimator`` (any unfitted scikit-learn estimator, cloned per member; default a
    HistGradientBoosting model), ``n_members`` (K >= 2), ``sampling`` (``disjoint`` or ``complement``),
    ``combine`` (``mean``, ``median``, ``max`` or ``stacking``), ``meta_estimator`` (stacking; default a
    random forest), ``meta_max_rows`` (at most about this many out-of-fold rows fit the meta-model),
    ``seed`` (fold assignment, member and meta seeds).

    Fitted attributes: ``members_``, ``meta_`` (None unless stacking), ``member_scores_`` (validation
    accuracy or R^2 on each member's out-of-fold rows), ``member_fit_seconds_``, ``member_n_rows_``,
    ``member_seeds_``, ``member_sha256_`` (Spark path; SHA-256 of the bytes shipped from the executor),
    ``fit_info_`` (backend and wall times), ``n_features_in_`` (and ``feature_names_in_``), ``classes_``.
    """

    def __init__(self, estimator=None, n_members=5, sampling="disjoint", combine="mean", meta_estimator=None,
                 meta_max_rows=100_000, seed=42):
        self.estimator = estimator
        self.n_members = n_members
        self.sampling = sampling
        self.combine = combine
        self.meta_estimator = meta_estimator
        self.meta_max_rows = meta_max_rows
        self.seed = seed

    # -- configuration
    def _default_estimator(self):
        raise NotImplementedError

    def _default_meta(self):
        raise NotImplementedError

    def base_estimator(self):
        return self.estimator if self.estimator is not None else self._default_estimator()

    def meta_template(self):
        return self.meta_estimator if self.meta_estimator is not None else self._default_meta()

    def check_params(self) -> None:
        """Raise ``InputError`` naming the parameter, what was expected and what was found."""
        K = self.n_members
        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 2:
            raise InputError(f"n_members={K!r}: expected an integer >= 2 (the number of member models). "
                             "Use n_members=5 for five folds.")
        if self.sampling not in SAMPLINGS:
            raise InputError(f"sampling={self.sampling!r}: expected one of {SAMPLINGS} ('disjoint': each member "
                             "on 1/K of the rows; 'complement': each member on (K-1)/K).")
        if self.combine not in COMBINES:
            raise InputError(f"combine={self.combine!r}: expected one of {COMBINES}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise InputError(f"seed={self.seed!r}: expected an integer (members' seeds derive from it).")
        if not isinstance(self.meta_max_rows, (int, np.integer)) or self.meta_max_rows < 1:
            raise InputError(f"meta_max_rows={self.meta_max_rows!r}: expected a positive integer.")
        base = self.base_estimator()
        if isinstance(base, type) or not hasattr(base, "fit") or not hasattr(base, "get_params"):
            raise InputError(f"estimator={base!r:.80}: expected an unfitted scikit-learn estimator instance, "
                             "e.g. HistGradientBoostingClassifier().")
        if is_classifier_estimator(self) and not hasattr(base, "predict_proba"):
            raise InputError(f"estimator {type(base).__name__} has no predict_proba: a fold ensemble "
                             "classifier combines class probabilities; use a probabilistic classifier.")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        try:
            tags.input_tags.allow_nan = get_tags(self.base_estimator()).input_tags.allow_nan
        except Exception:  # noqa: BLE001 - a non-sklearn estimator: be conservative
            tags.input_tags.allow_nan = False
        return tags

    @property
    def _classifier(self) -> bool:
        return is_classifier_estimator(self)

    # -- fitting
    def fit(self, X, y=None, *, feature_cols=None, label_col=None):
        """Fit the members (and the meta-model for stacking); returns ``self``.

        ``X``: array-like / pandas (with ``y``), or a Spark DataFrame: then ``y`` (or ``label_col``) names the
        label column and ``feature_cols`` the feature columns (default: every other column); the members are
        trained in parallel on Spark, one task per member.
        """
        if _is_spark_frame(X):
            # lazy, the one upward import: only a Spark DataFrame needs the Spark layer, so an ensemble still
            # unpickles where pyspark is not installed
            from manymodels.spark.ensembles import fit_spark

            return fit_spark(self, X, label_col=label_col or y, feature_cols=feature_cols)
        self.check_params()
        allow_nan = self.__sklearn_tags__().input_tags.allow_nan
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_all_finite="allow-nan" if allow_nan else True,
                             y_numeric=not self._classifier)
        classes = self._set_classes(y)
        start = time.perf_counter()
        h = row_hashes(X, y)
        fold = folds_of(h, self.seed, self.n_members)
        self.check_member_sizes(np.bincount(fold, minlength=self.n_members), len(y))
        members, seconds, n_rows = [], [], []
        for k in range(self.n_members):
            idx = member_rows(h, fold, k, self.sampling)
            model, took = fit_member(self, X[idx], y[idx], k)
            members.append(model)
            seconds.append(took)
            n_rows.append(len(idx))
        wall_members = time.perf_counter() - start
        used = used_mask(fold, self.n_members, self.sampling)
        P = member_outputs(members, X, classes)
        sums = oof_sums(P, y, used, classes)
        meta_rows = None
        if self.combine == "stacking":
            keep = meta_sample(h, self.seed, self.meta_fraction(len(y)))
            order = np.flatnonzero(keep)[np.argsort(h[keep], kind="stable")]
            meta_rows = (stack_features(P[:, order], used[:, order], stack_width(self.n_members, self.sampling)),
                         y[order])
        wall_oof = time.perf_counter() - start - wall_members
        return self.finish_fit(members, seconds=seconds, n_rows=n_rows, sums=sums, meta_rows=meta_rows,
                               info={"backend": "local", "n_rows": len(y), "wall_members_s": wall_members,
                                     "wall_oof_s": wall_oof})

    def _set_classes(self, y):
        if not self._classifier:
            return None
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        return self.classes_

    def meta_fraction(self, n_rows: int) -> float:
        return min(1.0, self.meta_max_rows / max(n_rows, 1))

    def check_member_sizes(self, fold_counts: np.ndarray, n_rows: int) -> None:
        """Every member needs training rows; the message names the first member without any."""
        per_member = fold_counts if self.sampling == "disjoint" else n_rows - fold_counts
        empty = np.flatnonzero(per_member == 0)
        if len(empty):
            raise InputError(
                f"n_members={self.n_members} with sampling={self.sampling!r} leaves member {int(empty[0])} without "
                f"training rows: the input has {n_rows} sample(s) in {int((fold_counts > 0).sum())} non-empty "
                "fold(s). Expected at least a few rows per member; use fewer members or more rows.")

    def finish_fit(self, members, *, seconds, n_rows, sums, meta_rows, info, sha256=None):
        """Set the fitted attributes from members trained anywhere (here or on Spark executors)."""
        self.members_ = list(members)
        self.member_seeds_ = [member_seed(self.seed, k) for k in range(self.n_members)]
        self.member_fit_seconds_ = np.asarray(seconds, dtype=np.float64)
        self.member_n_rows_ = np.asarray(n_rows, dtype=np.int64)
        self.member_scores_ = scores_from_sums(np.asarray(sums, dtype=np.float64), self._classifier)
        self.member_sha256_ = list(sha256) if sha256 is not None else None
        self.meta_ = None
        info = dict(info)
        if meta_rows is not None:
            start = time.perf_counter()
            self.meta_ = seeded_clone(self.meta_template(), group_seed(self.seed, "meta"))
            self.meta_.fit(*meta_rows)
            info.update(meta_rows=len(meta_rows[1]), wall_meta_s=time.perf_counter() - start)
        self.fit_info_ = info
        return self

    # -- prediction
    def member_outputs(self, X) -> np.ndarray:
        """``(K, n, C)`` member probabilities (C = 1: predictions for regression), after input validation."""
        check_is_fitted(self, "members_")
        allow_nan = self.__sklearn_tags__().input_tags.allow_nan
        X = validate_data(self, X, dtype=np.float64, reset=False,
                          ensure_all_finite="allow-nan" if allow_nan else True)
        return member_outputs(self.members_, X, getattr(self, "classes_", None))

    def combined(self, P: np.ndarray, rule: str | None = None) -> np.ndarray:
        """Combine ``member_outputs`` with ``rule`` (default ``self.combine``): ``(n, C)``."""
        rule = rule or self.combine
        if rule != "stacking":
            return combine_outputs(P, rule, self._classifier)
        if getattr(self, "meta_", None) is None:
            raise InputError("combine='stacking' but this ensemble was fitted without a meta-model: fit it "
                             "with combine='stacking' (the other rules need no refit).")
        width = stack_width(self.n_members, self.sampling)
        out = 0.0
        for j in range(self.n_members):  # every subset the meta-model saw in training: one per fold
            used = np.zeros(P.shape[:2], dtype=bool)
            used[trains_on(np.arange(self.n_members), j, self.sampling)] = True  # members that trained on fold j
            features = stack_features(P, used, width)
            if self._classifier:
                out = out + aligned_proba(self.meta_, features, self.classes_)
            else:
                out = out + np.asarray(self.meta_.predict(features), dtype=np.float64)[:, None]
        return out / self.n_members

    def with_combine(self, rule: str):
        """A copy predicting with another combination rule, sharing the fitted members (no refit)."""
        check_is_fitted(self, "members_")
        other = copy.copy(self)
        other.combine = rule
        other.check_params()
        if rule == "stacking" and getattr(self, "meta_", None) is None:
            raise InputError("with_combine('stacking') needs a meta-model: fit the ensemble with "
                             "combine='stacking' (the other rules need no refit).")
        if rule != "stacking":
            other.meta_ = None
        return other

    def members_table(self) -> pd.DataFrame:
        """One row per member: rows trained on, seed, fit seconds, validation score, SHA-256 (Spark path)."""
        check_is_fitted(self, "members_")
        return pd.DataFrame({
            "member": np.arange(self.n_members), "n_rows": self.member_n_rows_, "seed": self.member_seeds_,
            "fit_seconds": self.member_fit_seconds_, "validation_score": self.member_scores_,
            "model_sha256": self.member_sha256_ or [None] * self.n_members})


class FoldEnsembleClassifier(ClassifierMixin, _FoldEnsemble):
    __doc__ = "Fold / sample ensemble classifier.\n\n" + _FoldEnsemble.__doc__.split("\n", 2)[2]

    def _default_estimator(self):
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier()

    def _default_meta(self):
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=100, min_samples_leaf=20)

    def predict_proba(self, X) -> np.ndarray:
        return self.combined(self.member_outputs(X))

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # checks fitted first
        return self.classes_[np.argmax(proba, axis=1)]


class FoldEnsembleRegressor(RegressorMixin, _FoldEnsemble):
    __doc__ = "Fold / sample ensemble regressor.\n\n" + _FoldEnsemble.__doc__.split("\n", 2)[2]

    def _default_estimator(self):
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor()

    def _default_meta(self):
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(n_estimators=100, min_samples_leaf=20)

    def predict(self, X) -> np.ndarray:
        return self.combined(self.member_outputs(X))[:, 0]


def _is_spark_frame(X) -> bool:
    return type(X).__module__.startswith("pyspark.sql") and hasattr(X, "schema") and hasattr(X, "columns")
