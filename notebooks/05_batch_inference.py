# Databricks notebook source
# MAGIC %md
# MAGIC # 05 Batch inference
# MAGIC Score a table per group with the registered router of a training run (`models:/<model_name>@<alias>`).
# MAGIC Each worker loads each group's model at most once (checksum verified first); rows of groups without a
# MAGIC model get a `status` and an `error` naming the group instead of failing the job. The scores are written to
# MAGIC `output_table` (a table, or a folder as Parquet) partitioned by `score_date`: a rerun of a date replaces that
# MAGIC date's scores only. The model store is staged for the executors in `staging_dir` (empty: the volume's
# MAGIC `_staging` folder on Databricks). Run `02_train_per_group` first.
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
from manymodels.jobs.params import job_params
from manymodels.spark.session import get_spark

params = widgets(job_params("score"))  # each one's help and default: `manymodels score --help`
params

# COMMAND ----------

spark = get_spark()
scored = jobs.batch_score(spark, **params)
print(scored.summary())

# COMMAND ----------

output = jobs.read_any(spark, scored.output)
show(output.groupBy("score_date", "status", "model_version").count())
show(output.where("status = 'ok'").drop("error"))
