# Databricks notebook source
# MAGIC %md
# MAGIC # 03 Tune hyperparameters
# MAGIC Hyperparameter search with cross-validation in parallel. With the defaults it runs three approaches side by
# MAGIC side on scikit-learn's diabetes dataset (shipped with scikit-learn, no download), a random forest over
# MAGIC `n_estimators` in [10, 20, 50] and 3-fold CV scored by R-squared:
# MAGIC * **Spark MLlib `CrossValidator`** (MLlib's own random forest, `ParamGridBuilder`, `parallelism=2`),
# MAGIC * **a driver thread pool** (`concurrent.futures` over (params, fold), on the driver only),
# MAGIC * **manymodels' search**: every (params, fold) an independent Spark task; the data staged once and read once
# MAGIC   per Python worker (never copied per parameter set); results like scikit-learn's `cv_results_`.
# MAGIC
# MAGIC The best model is refitted on all rows, logged to MLflow (candidate results as a table artifact, best
# MAGIC parameters as params) and registered with the alias. Set `group_cols` for one search per group (the best
# MAGIC parameters of each group; the per-group best models are registered as one router model).

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
