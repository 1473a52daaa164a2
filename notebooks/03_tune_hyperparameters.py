# Databricks notebook source
# MAGIC %md
# MAGIC # 03 Tune hyperparameters
# MAGIC Hyperparameter search with cross-validation in parallel: every (parameter set, fold) an independent Spark task;
# MAGIC the data staged once (in `staging_dir`, a folder every executor reads) and read once per Python worker, never
# MAGIC copied per parameter set; results like scikit-learn's `cv_results_`. With an empty `input_path` it searches
# MAGIC scikit-learn's diabetes dataset (shipped with scikit-learn, no download). With `compare` on, it also times
# MAGIC Spark MLlib's `CrossValidator` and a driver thread pool on a bounded sample brought to the driver.
# MAGIC
# MAGIC The best model is refitted on all rows, logged to MLflow (candidate results as a table artifact, best
# MAGIC parameters as params) and registered with the alias. Set `group_cols` for one search per group (the best
# MAGIC parameters of each group; the per-group best models are registered as one router model).
# MAGIC
# MAGIC `catalog` and `schema` name the Unity Catalog schema: models are `catalog.schema.model_name`, and the default
# MAGIC input and staging folders are in its volume (`/Volumes/<catalog>/<schema>/<volume>/...`). Locally (no
# MAGIC Databricks) they may stay empty: one-level names in the local MLflow registry, folders under `.manymodels/`.

# COMMAND ----------

# The package: a job run has it from the job's environment or cluster library (the wheel the bundle builds); an
# interactive notebook installs it once from the bundle's synced source, as the bundle templates do (`-e ..`).
import importlib.util
import os

if os.environ.get("DATABRICKS_RUNTIME_VERSION") and importlib.util.find_spec("manymodels") is None:
    get_ipython().run_line_magic("pip", "install --quiet -e ..")  # noqa: F821 - the notebook's IPython shell

# COMMAND ----------

from manymodels.databricks.notebook import show, widgets
from manymodels.jobs.params import job_params
from manymodels.spark.session import get_spark
from manymodels.studies.tuning import tune

params = widgets(job_params("tune"))  # each one's help and default: `manymodels tune --help`
params

# COMMAND ----------

spark = get_spark()
report = tune(spark, **params)
print(report.summary())

# COMMAND ----------

# MAGIC %md
# MAGIC Time and best cross-validated score of each approach (MLlib uses its own forest and folds, so its score differs;
# MAGIC the thread pool uses manymodels' folds and seeds, so its scores are the same).

# COMMAND ----------

show(report.comparison)

# COMMAND ----------

# MAGIC %md
# MAGIC The candidate results, like scikit-learn's `cv_results_` (one row per parameter set, or per group and parameter
# MAGIC set for a per-group search).

# COMMAND ----------

show(report.result.cv_results.drop(columns=["params"]))
