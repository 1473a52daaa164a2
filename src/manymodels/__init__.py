"""manymodels: train, track and serve many scikit-learn models in parallel on Spark with pandas UDFs.

Importing the package is cheap: Spark and MLflow are imported only by the functions that use them.
"""
from manymodels.config import PanelSpec, TrainSpec
from manymodels.validation import InputError

__version__ = "0.1.0"

__all__ = ["PanelSpec", "TrainSpec", "InputError", "train_per_group", "train_per_file", "get_spark"]


def __getattr__(name):  # lazy re-exports keep `import manymodels` free of pyspark start-up cost
    if name in ("train_per_group", "train_per_file"):
        from manymodels import training

        return getattr(training, name)
    if name == "get_spark":
        from manymodels.session import get_spark

        return get_spark
    raise AttributeError(name)
