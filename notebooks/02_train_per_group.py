# Databricks notebook source
# MAGIC %md
# MAGIC # 02 Train per group
# MAGIC One model per group in parallel with pandas UDFs; the model table is written atomically, every group's
# MAGIC model is logged to MLflow from the driver, and one router model per training run is registered
# MAGIC with an alias. Run `01_prepare_data` first (locally its default output is the default input here).

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
result = jobs.train_and_register(
    spark, values["input_path"] or jobs.default_input(), group_cols=values["group_cols"],
    feature_cols=values["feature_cols"], label_col=values["label_col"], estimator=values["estimator"],
    params=values["estimator_params"], model_name=values["model_name"], alias=values["alias"],
    experiment=values["experiment"], location=values["model_table"], failure_policy=values["failure_policy"],
    retrain=values["retrain"])
print(jobs.summarize(result, None, None, sum(result.timings.values()), jobs.metric_quantiles(spark, result.table)))

# COMMAND ----------

hidden = ["model", "model_sha256", "params", "library_versions", "training_run_id"]
show(result.table.read(spark).drop(*hidden).orderBy("status", *values["group_cols"]))
