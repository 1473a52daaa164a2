# Databricks notebook source
# MAGIC %md
# MAGIC # 02 Train per group
# MAGIC One model per group in parallel with pandas UDFs; the model table is written atomically, every group's
# MAGIC model is logged to MLflow from the driver, and one router model per training run is registered
# MAGIC with an alias. Run `01_prepare_data` first (locally its default output is the default input here).

# COMMAND ----------

from manymodels import jobs
from manymodels.databricks.notebook import show, widgets
from manymodels.spark.session import get_spark

params = widgets({
    "input_path": "",
    "group_cols": "store,item",
    "feature_cols": "x0,x1,x2,x3,x4",
    "label_col": "y",
    "estimator": "sklearn.linear_model.LinearRegression",
    "estimator_params": "{}",
    "model_name": "manymodels_router",
    "alias": "champion",
    "experiment": "",
    "model_table": "",
    "failure_policy": "record",
    "retrain": "all",  # "failed" or "changed": train only those groups, carry the others over from model_table
})
params

# COMMAND ----------

spark = get_spark()
result = jobs.train_and_register(
    spark, params["input_path"] or jobs.default_input(), fmt=None,
    group_cols=params["group_cols"].split(","), feature_cols=params["feature_cols"].split(","),
    label_col=params["label_col"], estimator=params["estimator"], params=params["estimator_params"],
    model_name=params["model_name"], alias=params["alias"], experiment=params["experiment"] or None,
    location=params["model_table"] or None, failure_policy=params["failure_policy"], retrain=params["retrain"])
print(jobs.summarize(result, None, None, sum(result.timings.values()), jobs.metric_quantiles(spark, result.table)))

# COMMAND ----------

hidden = ["model", "model_sha256", "params", "library_versions", "training_run_id"]
show(result.table.read(spark).drop(*hidden).orderBy("status", *params["group_cols"].split(",")))
