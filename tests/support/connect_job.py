"""Run by test_spark_connect.py in its own process: train and score through Spark Connect (SPARK_REMOTE)."""
import json
import logging
import sys

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression, LogisticRegression

from manymodels.api import score_per_group, score_single
from manymodels.core.panel import make_panel
from manymodels.core.spec import PanelSpec
from manymodels.spark.session import get_spark, is_connect
from manymodels.spark.training import train_per_group

logging.basicConfig(stream=sys.stdout, format="%(message)s")  # the library's progress lines, as the CLI shows them
logging.getLogger("manymodels").setLevel(logging.INFO)
out_dir = sys.argv[1]
spark = get_spark()
rows, _ = make_panel(PanelSpec(n_groups=30, mean_rows=50, n_features=3, seed=3))
df = spark.createDataFrame(rows)
table = train_per_group(df, group_cols=["store", "item"], feature_cols=["x0", "x1", "x2"], label_col="y",
                        estimator=LinearRegression(), location=f"{out_dir}/table", progress=1e-3)
per_group = score_per_group(df, table, staging_dir=f"{out_dir}/staging").toPandas()
one = LinearRegression().fit(rows[["x0", "x1", "x2"]], rows["y"])
single = score_single(df, one, passthrough_cols=["store"]).toPandas()
X = rows[["x0", "x1", "x2"]]
clf = LogisticRegression().fit(X, np.where(rows["y"] > rows["y"].median(), "high", "low"))
classified = score_single(df, clf).toPandas()  # probabilities: a struct of one field per class
print("RESULT " + json.dumps({
    "connect": is_connect(spark), "counts": table.counts,
    "per_group_ok": int((per_group["status"] == "ok").sum()), "rows": len(rows),
    "single_matches": bool(np.allclose(np.sort(single["prediction"]),
                                       np.sort(one.predict(rows[["x0", "x1", "x2"]])))),
    "classified": sorted(classified["prediction"].value_counts().to_dict().items()) ==
    sorted(pd.Series(clf.predict(X)).value_counts().to_dict().items()),
    "proba_sums": bool(np.allclose([p["high"] + p["low"] for p in classified["probabilities"]], 1.0))}))
spark.stop()
