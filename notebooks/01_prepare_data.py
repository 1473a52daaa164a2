# Databricks notebook source
# MAGIC %md
# MAGIC # 01 Prepare data
# MAGIC A synthetic panel of many groups (store x item) with a known linear truth per group, written as
# MAGIC Parquet with the group keys and/or one gzipped CSV per group (each file one Spark partition).
# MAGIC Locally the output goes under `.manymodels/data/panel`; on Databricks, to the volume given by `output_dir`.

# COMMAND ----------

from manymodels import jobs
from manymodels.core.spec import PanelSpec
from manymodels.databricks.notebook import show, widgets
from manymodels.jobs.params import job_params, parse_all

params = widgets(job_params("prepare"))  # each one's help and default: `manymodels prepare --help`
params

# COMMAND ----------

values = parse_all(job_params("prepare"), params)
panel = PanelSpec(n_groups=values["n_groups"], mean_rows=values["mean_rows"],
                  size_distribution=values["size_distribution"], seed=values["seed"])
prepared = jobs.prepare_data(panel, values["output_dir"], layout=values["layout"])
print(f"wrote {prepared.n_rows} training rows of {prepared.n_groups} groups under {prepared.parquet_dir.parent}")
print(f"held out {len(prepared.holdout)} rows for scoring")

# COMMAND ----------

show(prepared.truth)
