"""The MLflow layer, the only one that imports mlflow, used from the driver only: where runs are recorded
(``context``), logging training runs and registering their routers (``runs``), reading the registry back
(``registry``), the champion/challenger promotion gate (``promotion``), logging searches (``searches``), the router
pyfunc (``router_pyfunc``) and MLflow's filter grammar (``filters``)."""
from manymodels.tracking.context import *  # noqa: F403  (configure, model_name, TrackingContext, the tags)
from manymodels.tracking.promotion import *  # noqa: F403  (promote, Promotion, the gate's tags)
from manymodels.tracking.registry import *  # noqa: F403  (group_models, load_for_scoring, registered_fingerprint)
from manymodels.tracking.runs import *  # noqa: F403  (log_training, log_estimator, LoggedTraining, ...)
from manymodels.tracking.searches import *  # noqa: F403  (log_search, log_search_per_group)
