"""The MLflow layer: logging training runs, the registry, and the router pyfunc. The only layer that imports mlflow."""
from manymodels.tracking.runs import *  # noqa: F403  (the public functions: configure, log_training, ...)
from manymodels.tracking.searches import *  # noqa: F403  (log_search, log_search_per_group)
