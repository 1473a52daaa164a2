"""Fold / sample ensembles without Spark: the scikit-learn contract, the split, the combination rules, and
stacking that never sees a member's own training rows nor the evaluation rows (checked by construction)."""
import pickle

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn.utils.estimator_checks import parametrize_with_checks

from manymodels.core import ensemble as ens
from manymodels.core.ensemble import FoldEnsembleClassifier, FoldEnsembleRegressor
from manymodels.core.keys import group_seed
from manymodels.errors import InputError

# Two members: the checks fit on as few as 10 rows, and a hash split of 10 rows into 3+ folds can leave one empty.
CONTRACT = [
    FoldEnsembleClassifier(DecisionTreeClassifier(max_depth=4), n_members=2),
    FoldEnsembleClassifier(DecisionTreeClassifier(max_depth=4), n_members=2, sampling="complement", combine="median"),
    FoldEnsembleClassifier(DecisionTreeClassifier(max_depth=4), n_members=2, combine="stacking",
                           meta_estimator=DecisionTreeClassifier(max_depth=3)),
    FoldEnsembleRegressor(DecisionTreeRegressor(max_depth=4), n_members=2, combine="max"),
    FoldEnsembleRegressor(DecisionTreeRegressor(max_depth=4), n_members=2, sampling="complement",
                          combine="stacking", meta_estimator=DecisionTreeRegressor(max_depth=3)),
]


@parametrize_with_checks(CONTRACT)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=3000, n_features=8, n_informative=5, random_state=3)
    return X[:2000], y[:2000], X[2000:], y[2000:]


def tree(**kw):
    return DecisionTreeClassifier(max_depth=6, **kw)


def test_params_clone_and_fit_returns_self(data):
    X, y, _, _ = data
    model = FoldEnsembleClassifier(tree(), n_members=3, combine="median", seed=9)
    assert model.get_params()["n_members"] == 3 and model.get_params()["estimator__max_depth"] == 6
    model.set_params(n_members=4, estimator__max_depth=3)
    twin = clone(model)
    assert (twin.get_params()["n_members"] == 4 and twin.estimator.max_depth == 3
            and twin.estimator is not model.estimator)
    assert model.fit(X, y) is model
    assert len(model.members_) == 4 and not hasattr(twin, "members_")
    assert model.estimator.max_depth == 3 and not hasattr(model.estimator, "tree_")  # template never fitted


def test_member_seeds_derive_from_seed_and_member_index(data):
    X, y, _, _ = data
    model = FoldEnsembleClassifier(tree(random_state=0), n_members=3, seed=5).fit(X, y)
    expected = [group_seed(5, ("member", k)) for k in range(3)]
    assert model.member_seeds_ == expected
    assert [m.random_state for m in model.members_] == expected
    other = FoldEnsembleClassifier(tree(random_state=0), n_members=3, seed=6).fit(X, y)
    assert other.member_seeds_ != expected


@pytest.mark.parametrize("sampling", ["disjoint", "complement"])
def test_members_get_one_fold_or_its_complement(data, sampling):
    X, y, _, _ = data
    model = FoldEnsembleClassifier(tree(), n_members=4, sampling=sampling).fit(X, y)
    fold = ens.folds_of(ens.row_hashes(X, y), model.seed, 4)
    counts = np.bincount(fold, minlength=4)
    assert counts.min() > 400  # about 1/4 each
    expected = counts if sampling == "disjoint" else len(y) - counts
    np.testing.assert_array_equal(model.member_n_rows_, expected)


def test_split_and_models_do_not_depend_on_row_order(data):
    X, y, X_test, _ = data
    perm = np.random.default_rng(0).permutation(len(y))
    a = FoldEnsembleClassifier(tree(), n_members=3, combine="stacking", meta_estimator=tree()).fit(X, y)
    b = FoldEnsembleClassifier(tree(), n_members=3, combine="stacking", meta_estimator=tree()).fit(X[perm], y[perm])
    np.testing.assert_array_equal(a.predict_proba(X_test), b.predict_proba(X_test))
    np.testing.assert_array_equal(a.member_scores_, b.member_scores_)


def test_combination_rules_match_their_definition(data):
    X, y, X_test, _ = data
    model = FoldEnsembleClassifier(tree(), n_members=5).fit(X, y)
    P = np.stack([m.predict_proba(X_test) for m in model.members_])
    np.testing.assert_allclose(model.predict_proba(X_test), P.mean(axis=0))
    med, mx = np.median(P, axis=0), P.max(axis=0)
    np.testing.assert_allclose(model.with_combine("median").predict_proba(X_test), med / med.sum(1, keepdims=True))
    np.testing.assert_allclose(model.with_combine("max").predict_proba(X_test), mx / mx.sum(1, keepdims=True))
    assert model.with_combine("max").members_ is model.members_  # no refit
    with pytest.raises(InputError, match="stacking"):
        model.with_combine("stacking")
    reg = FoldEnsembleRegressor(DecisionTreeRegressor(max_depth=5), n_members=3, combine="median")
    Xr, yr = make_regression(600, 4, noise=3, random_state=1)
    reg.fit(Xr, yr)
    np.testing.assert_allclose(reg.predict(Xr[:50]), np.median([m.predict(Xr[:50]) for m in reg.members_], axis=0))


def test_member_scores_are_out_of_fold_accuracies(data):
    X, y, _, _ = data
    model = FoldEnsembleClassifier(tree(), n_members=3).fit(X, y)
    fold = ens.folds_of(ens.row_hashes(X, y), model.seed, 3)
    for k, member in enumerate(model.members_):
        oof = fold != k
        assert model.member_scores_[k] == pytest.approx(np.mean(member.predict(X[oof]) == y[oof]))
    assert 0.6 < model.member_scores_.min() and (model.member_fit_seconds_ > 0).all()
    table = model.members_table()
    assert list(table.columns) == ["member", "n_rows", "seed", "fit_seconds", "validation_score", "model_sha256"]
    assert len(table) == 3


SEEN = 0.999


class Memorizer(ClassifierMixin, BaseEstimator):
    """Predicts P(class 1) = SEEN on rows it was trained on, and an encoding of the row's id (feature 0) on
    any other row, so a meta-model's inputs tell exactly which rows and which members produced them."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.seen_ = set(X[:, 0].astype(int).tolist())
        return self

    def predict_proba(self, X):
        ids = X[:, 0].astype(int)
        p = np.where(np.isin(ids, list(self.seen_)), SEEN, ids / 1e5)
        return np.column_stack([1 - p, p])


class Recorder(ClassifierMixin, BaseEstimator):
    """A meta-model that records what it was fitted on."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.X_fit_, self.y_fit_ = np.array(X), np.array(y)
        return self

    def predict_proba(self, X):
        return np.full((len(X), len(self.classes_)), 1.0 / len(self.classes_))


@pytest.mark.parametrize("sampling", ["disjoint", "complement"])
def test_stacking_sees_only_out_of_fold_predictions_of_training_rows(sampling):
    rng = np.random.default_rng(1)
    ids = rng.permutation(np.arange(1, 3001))  # id in feature 0: unique, and < 1e5 so encodable
    X = np.column_stack([ids, rng.normal(size=(3000, 2))])
    y = rng.integers(0, 2, 3000)
    train, test = slice(0, 2000), slice(2000, None)
    model = FoldEnsembleClassifier(Memorizer(), n_members=4, sampling=sampling, combine="stacking",
                                   meta_estimator=Recorder()).fit(X[train], y[train])
    model.predict_proba(X[test])  # evaluation rows: scored, never fitted on
    seen = model.meta_.X_fit_
    width = 3 if sampling == "disjoint" else 1
    assert seen.shape == (2000, width)
    assert not np.isin(SEEN, seen)  # never a member's prediction on its own training rows
    # Each meta row holds predictions of members that did not train on it, all encoding the same row id:
    assert (seen == seen[:, :1]).all()
    fit_ids = set(np.rint(seen[:, 0] * 1e5).astype(int).tolist())
    assert fit_ids == set(ids[train].tolist()) and not fit_ids & set(ids[test].tolist())
    assert (model.meta_.y_fit_ == y[train][np.argsort(ens.row_hashes(X[train], y[train]))]).all()


def test_stacking_meta_rows_are_capped_by_a_hash_sample(data):
    X, y, X_test, y_test = data
    model = FoldEnsembleClassifier(tree(), n_members=3, combine="stacking", meta_estimator=LogisticRegression(),
                                   meta_max_rows=500).fit(X, y)
    assert 350 < model.fit_info_["meta_rows"] < 650 and model.meta_.n_features_in_ == 2
    assert model.score(X_test, y_test) > 0.75
    probs = model.predict_proba(X_test)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_pickled_ensemble_predicts_the_same(data):
    X, y, X_test, _ = data
    model = FoldEnsembleClassifier(tree(), n_members=3, combine="stacking", meta_estimator=tree()).fit(X, y)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict_proba(X_test), model.predict_proba(X_test))


def test_regressor_stacking_and_scores():
    X, y = make_regression(1500, 5, noise=5, random_state=2)
    model = FoldEnsembleRegressor(DecisionTreeRegressor(max_depth=6), n_members=3,
                                  combine="stacking").fit(X[:1000], y[:1000])
    assert model.score(X[1000:], y[1000:]) > 0.6
    assert ((0.5 < model.member_scores_) & (model.member_scores_ < 1)).all()
    assert model.predict(X[1000:]).shape == (500,)


@pytest.mark.parametrize("param, value, words", [
    ("n_members", 1, "n_members=1: expected an integer >= 2"),
    ("sampling", "bootstrap", "sampling='bootstrap': expected one of"),
    ("combine", "vote", "combine='vote': expected one of"),
    ("seed", None, "seed=None: expected an integer"),
    ("meta_max_rows", 0, "meta_max_rows=0"),
    ("estimator", DecisionTreeClassifier, "expected an unfitted scikit-learn estimator instance"),
])
def test_bad_parameters_raise_input_error_naming_them(data, param, value, words):
    X, y, _, _ = data
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace("[", r"\[")):
        FoldEnsembleClassifier(**{"estimator": tree(), param: value}).fit(X, y)


def test_classifier_without_predict_proba_is_refused(data):
    from sklearn.svm import LinearSVC

    X, y, _, _ = data
    with pytest.raises(InputError, match="LinearSVC has no predict_proba"):
        FoldEnsembleClassifier(LinearSVC()).fit(X, y)


def test_members_missing_a_class_are_aligned_to_the_ensemble_classes():
    X = np.arange(40, dtype=float)[:, None]
    y = np.array(["a"] * 38 + ["b", "c"])
    model = FoldEnsembleClassifier(DecisionTreeClassifier(), n_members=3).fit(X, y)
    assert list(model.classes_) == ["a", "b", "c"]
    assert any(len(m.classes_) < 3 for m in model.members_)
    proba = model.predict_proba(X)
    assert proba.shape == (40, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
