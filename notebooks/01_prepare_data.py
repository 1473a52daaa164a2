# Databricks notebook source
# MAGIC %md
# MAGIC # 01 Prepare data
# MAGIC A synthetic panel of many groups (store x item) with a known linear truth per group, written as
# MAGIC Parquet with the group keys and/or one gzipped CSV per group (each file one Spark partition). On Databricks the
# MAGIC output goes to the schema volume's `panel` folder (or `output_dir`); locally under `.manymodels/data/panel`.
# MAGIC In the bundle's jobs this runs only where `generate_data` is true (the dev target); production trains on its
# MAGIC configured input.

# COMMAND ----------

# The package: a job run has it from the job's environment or cluster library (the wheel the bundle builds); an
# interactive notebook installs it once from the bundle's synced source, as the bundle templates do (`-e ..`).
import importlib.util
import os

if os.environ.get("DATABRICKS_RUNTIME_VERSION") and importlib.util.find_spec("manymodels") is None:
    get_ipython().run_line_magic("pip", "install --quiet -e ..")  # noqa: F821 - the notebook's IPython shell

# COMMAND ----------

from manymodels import jobs
from manymodels.core.spec import PanelSpec
from manymodels.databricks.notebook import show, widgets
from manymodels.jobs.params import job_params, parse_all
from manymodels.locations import Locations

params = widgets(job_params("prepare"))  # each one's help and default: `manymodels prepare --help`
params

# COMMAND ----------

values = parse_all(job_params("prepare"), params)
panel = PanelSpec(n_groups=values["n_groups"], mean_rows=values["mean_rows"],
                  size_distribution=values["size_distribution"], seed=values["seed"])
prepared = jobs.prepare_data(panel, Locations.of(values).panel_dir(values["output_dir"]), layout=values["layout"])
print(f"wrote {prepared.n_rows} training rows of {prepared.n_groups} groups under {prepared.parquet_dir.parent}")
print(f"held out {len(prepared.holdout)} rows for scoring")

# COMMAND ----------

show(prepared.truth)
