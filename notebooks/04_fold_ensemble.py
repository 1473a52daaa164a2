# Databricks notebook source
# MAGIC %md
# MAGIC # 04 Fold ensemble
# MAGIC Reproduces the published fold-ensemble study on `make_classification` (20 features, 2 classes, 10% label
# MAGIC noise; 70/30 split): a **centralized** model (one model on all training rows, and K fold models on
# MAGIC (K-1)/K one after another) against **K members trained in parallel on Spark**, one Spark task per member
# MAGIC (`sampling=disjoint`: each on its own 1/K sample; `complement`: each on the complement of one fold), and
# MAGIC their ensembles: **mean**, **median**, **max** of the members' probabilities and **stacking** (a random
# MAGIC forest fitted on out-of-fold predictions only). The table puts the accuracies and wall times next to the
# MAGIC published figures (N = 1,000,000, CatBoost); the plot shows the density of the predicted probability per
# MAGIC true class for each method. The ensemble with the chosen `combine` rule is logged to MLflow (members'
# MAGIC validation scores and training times, the table, the plot) and registered with the alias; it is an
# MAGIC ordinary scikit-learn model that predicts without Spark.

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
