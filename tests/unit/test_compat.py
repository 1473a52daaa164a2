"""The 0.1 layout's module names still work: pickles that name them load, and the imports the README of 0.1
showed return the layered package's objects (src/manymodels/_compat.py)."""
import pickle
import subprocess
import sys

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

import manymodels
from manymodels import api
from manymodels.core import ensemble
from manymodels.spark import session


def old_pickle(obj, new_module: str, old_module: str) -> bytes:
    """``obj`` pickled as manymodels 0.1 pickled it: protocol 2 names a class by a text GLOBAL opcode, so the
    module name can be swapped for the old one byte for byte."""
    data = pickle.dumps(obj, protocol=2)
    name = type(obj).__name__ if not isinstance(obj, type) else obj.__name__
    new, old = f"c{new_module}\n{name}\n".encode(), f"c{old_module}\n{name}\n".encode()
    assert new in data, "the pickle no longer names the class by module (test needs a new way to age it)"
    return data.replace(new, old)


@pytest.mark.parametrize("old_module", ["manymodels.router", "manymodels.router_pyfunc"])
def test_registered_routers_pickled_under_the_old_names_load(old_module):
    from manymodels.tracking.router_pyfunc import GroupRouter

    assert pickle.loads(f"c{old_module}\nGroupRouter\n.".encode()) is GroupRouter
    made = GroupRouter(key_cols=["store"], feature_cols=["x"], training_run_id="run-1")
    router = pickle.loads(old_pickle(made, "manymodels.tracking.router_pyfunc", old_module))
    assert type(router) is GroupRouter and router.key_cols == ["store"]


@pytest.mark.parametrize("cls, make", [
    (ensemble.FoldEnsembleClassifier, lambda: (LogisticRegression(), np.tile([0, 1], 30))),
    (ensemble.FoldEnsembleRegressor, lambda: (LinearRegression(), np.arange(60.0))),
])
def test_fold_ensembles_logged_under_the_old_name_load_and_predict(cls, make):
    learner, y = make()
    X = np.random.default_rng(0).normal(size=(60, 3))
    fitted = cls(learner, n_members=3).fit(X, y)
    loaded = pickle.loads(old_pickle(fitted, "manymodels.core.ensemble", "manymodels.ensemble"))
    assert type(loaded) is cls
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))


def test_the_public_functions_import_from_their_old_paths():
    from manymodels.ensemble import FoldEnsembleClassifier, FoldEnsembleRegressor
    from manymodels.inference import score_per_group, score_single
    from manymodels.search_spark import search, search_per_group
    from manymodels.session import get_spark
    from manymodels.training import train_per_file, train_per_group

    assert (score_per_group, score_single) == (api.score_per_group, api.score_single)
    assert (search, search_per_group) == (api.search, api.search_per_group)
    assert (train_per_group, train_per_file) == (api.train_per_group, api.train_per_file)
    assert get_spark is session.get_spark
    assert (FoldEnsembleClassifier, FoldEnsembleRegressor) == (ensemble.FoldEnsembleClassifier,
                                                                ensemble.FoldEnsembleRegressor)
    assert manymodels.score_per_group is api.score_per_group and manymodels.get_spark is session.get_spark


def test_an_old_name_without_the_attribute_says_where_it_looked():
    import manymodels.inference as old

    with pytest.raises(AttributeError, match="now manymodels.api"):
        old.no_such_function  # noqa: B018


def test_importing_the_package_stays_cheap():
    """`import manymodels` (and an old module name) pulls in neither pyspark nor mlflow."""
    code = ("import sys, manymodels, manymodels.inference; "
            "print(sorted(m for m in ('pyspark', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
