# Databricks notebook source
# MAGIC %md
# MAGIC # 04 Fold ensemble
# MAGIC K members trained in parallel on Spark, one Spark task per member (`sampling=disjoint`: each on its own 1/K
# MAGIC sample; `complement`: each on the complement of one fold), and their ensembles: **mean**, **median**, **max**
# MAGIC of the members' probabilities and **stacking** (a random forest fitted on out-of-fold predictions only), on
# MAGIC `input_path` (a table or folder with a binary `label_col`) or, when empty, on `make_classification` data as in
# MAGIC the published fold-ensemble study (20 features, 2 classes, 10% label noise; 70/30 split). With `compare` on, a
# MAGIC **centralized** model (one model on all training rows, and K fold models one after another, on a bounded
# MAGIC sample on the driver) is timed beside them. The plot shows the density of the predicted probability per true
# MAGIC class for each method. The ensemble with the chosen `combine` rule is logged to MLflow (members'
# MAGIC validation scores and training times, the table, the plot) and registered with the alias; it is an
# MAGIC ordinary scikit-learn model that predicts without Spark.
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
from manymodels.studies.fold_ensemble import image_html, run_study

params = widgets(job_params("ensemble"))  # each one's help and default: `manymodels ensemble --help`
params

# COMMAND ----------

spark = get_spark()
result = run_study(spark, **params)
print(result.result_line)

# COMMAND ----------

# MAGIC %md
# MAGIC Accuracy on the 30% test set and wall time of each method, next to the published figures.

# COMMAND ----------

show(result.table)

# COMMAND ----------

# MAGIC %md
# MAGIC The members: rows trained on, seed (derived from the configured seed and the member index), fit seconds,
# MAGIC validation accuracy (on the rows the member did not train on) and test accuracy.

# COMMAND ----------

show(result.members)

# COMMAND ----------

if "displayHTML" in globals():  # Databricks renders the plot inline
    displayHTML(image_html(result.kde_png))  # noqa: F821
else:
    print(f"KDE plot: {result.kde_png}")

# COMMAND ----------

print(f"registered {result.logged.model_uri} (version {result.logged.version}), MLflow run {result.logged.run_id}")
