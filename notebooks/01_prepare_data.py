# Databricks notebook source
# MAGIC %md
# MAGIC # 01 Prepare data
# MAGIC A synthetic panel of many groups (store x item) with a known linear truth per group, written as
# MAGIC Parquet with the group keys and/or one gzipped CSV per group (each file one Spark partition).
# MAGIC Locally the output goes under `.manymodels/data/panel`; on Databricks, to the volume given by `output_dir`.

# COMMAND ----------

from manymodels import jobs
from manymodels.core.checks import parse_int
from manymodels.core.spec import PanelSpec
from manymodels.databricks.notebook import show, widgets

params = widgets({
    "n_groups": "1000",
    "mean_rows": "200",
    "size_distribution": "poisson",
    "layout": "both",
    "output_dir": "",
    "seed": "7",
})
params

# COMMAND ----------

panel = PanelSpec(n_groups=parse_int("n_groups", params["n_groups"], minimum=1),
                  mean_rows=parse_int("mean_rows", params["mean_rows"], minimum=1),
                  size_distribution=params["size_distribution"], seed=parse_int("seed", params["seed"]))
prepared = jobs.prepare_data(panel, params["output_dir"] or None, layout=params["layout"])
print(f"wrote {prepared.n_rows} training rows of {prepared.n_groups} groups under {prepared.parquet_dir.parent}")
print(f"held out {len(prepared.holdout)} rows for scoring")

# COMMAND ----------

show(prepared.truth)
