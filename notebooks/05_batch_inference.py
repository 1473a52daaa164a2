# Databricks notebook source
# MAGIC %md
# MAGIC # 05 Batch inference
# MAGIC Score a table per group with the registered router of a training run (`models:/<model_name>@<alias>`).
# MAGIC Each worker loads each group's model at most once (checksum verified first); rows of groups without a
# MAGIC model get a `status` and an `error` naming the group instead of failing the job. The scores are written
# MAGIC to `output_table` (a table name, or a folder as Parquet). Run `02_train_per_group` first.

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
show(output.groupBy("status", "model_version").count())
show(output.where("status = 'ok'").drop("error"))
