# Databricks notebook source
# MAGIC %md
# MAGIC # 02 Train per group
# MAGIC One model per group in parallel with pandas UDFs; the model table is written atomically, every group's
# MAGIC model is logged to MLflow from the driver, and one router model per training run is registered with an alias.
# MAGIC With an empty `input_path` it trains on the panel `01_prepare_data` writes.
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

from manymodels import jobs
from manymodels.databricks.notebook import show, widgets
from manymodels.jobs.params import job_params, parse_all
from manymodels.spark.session import get_spark

params = widgets(job_params("train"))  # each one's help and default: `manymodels train --help`
params

# COMMAND ----------

values = parse_all(job_params("train"), params)  # a bad value fails here, before Spark starts
spark = get_spark()
result = jobs.train_job(spark, values)
print(jobs.summarize(result, None, None, sum(result.timings.values()), jobs.metric_quantiles(spark, result.table)))

# COMMAND ----------

hidden = ["model", "model_sha256", "params", "library_versions", "training_run_id"]
show(result.table.read(spark).drop(*hidden).orderBy("status", *values["group_cols"]))
