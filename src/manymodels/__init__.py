"""manymodels: train, track and serve many scikit-learn models in parallel on Spark with pandas UDFs.

The package is layered (docs/architecture.md): ``core`` (pure numpy/pandas/scikit-learn), ``storage`` (model
stores and tables), ``spark`` (the one Spark layer), ``tracking`` (the one MLflow layer), ``databricks``,
``studies``, ``api`` (the public functions that take MLflow URIs too) and ``jobs`` (job steps and the CLI).

Importing the package is cheap: Spark and MLflow are imported only by the functions that use them.
"""
from manymodels import _compat
from manymodels.core.spec import PanelSpec, TrainSpec
from manymodels.errors import InputError
from manymodels.settings import VERSION as __version__  # noqa: F401  (re-exported)

__all__ = ["PanelSpec", "TrainSpec", "InputError", "train_per_group", "train_per_file", "score_per_group",
           "score_single", "search", "search_per_group", "FoldEnsembleClassifier", "FoldEnsembleRegressor",
           "get_spark"]
_LAZY = {"train_per_group": "manymodels.api", "train_per_file": "manymodels.api", "score_per_group": "manymodels.api",
         "score_single": "manymodels.api", "search": "manymodels.api", "search_per_group": "manymodels.api",
         "FoldEnsembleClassifier": "manymodels.core.ensemble", "FoldEnsembleRegressor": "manymodels.core.ensemble",
         "get_spark": "manymodels.spark.session"}

_compat.install()  # the flat module names of 0.1 (manymodels.router, manymodels.inference, ...) as aliases


def __getattr__(name):
    if name in _LAZY:
        import importlib  # lazy: `import manymodels` stays free of pyspark's and mlflow's start-up cost

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'manymodels' has no attribute {name!r}")
