"""The production tuning job on real input and its use by nightly training: ``tune`` on a Parquet folder (global,
with the bounded comparison, and per group), then ``train_and_register(params_from=...)`` fitting each group with
its own best parameters, and ``retrain="changed"`` retraining exactly the groups whose tuned parameters changed."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_regression

from manymodels.core import model_bytes
from manymodels.errors import InputError
from manymodels.jobs.steps import train_and_register
from manymodels.studies import tuning
from manymodels.studies.tuning import tune

pytestmark = pytest.mark.spark
FEATURES = [f"x{i}" for i in range(4)]
RIDGE = "sklearn.linear_model.Ridge"


def _parquet(pdf: pd.DataFrame, folder: Path) -> str:
    folder.mkdir(parents=True)
    pdf.to_parquet(folder / "part-0.parquet", index=False)
    return str(folder)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Stores 0 and 2 are noiseless (the smallest alpha wins), store 1 is pure noise (the largest wins); store 3 is
    trained but was never tuned."""
    frames = []
    for store in range(4):
        X, y = make_regression(150, 4, noise=0.0, random_state=store)
        if store == 1:
            y = np.random.default_rng(store).normal(size=len(y))
        frames.append(pd.DataFrame(X, columns=FEATURES).assign(y=y, store=store))
    rows = pd.concat(frames, ignore_index=True)
    root = tmp_path_factory.mktemp("tuned_training")
    return root, _parquet(rows[rows["store"] < 3], root / "tune_rows"), _parquet(rows, root / "train_rows")


def _alphas(spark, table) -> dict:
    frame = table.read(spark).select("store", "params").toPandas()
    return {int(s): json.loads(p)["alpha"] for s, p in zip(frame["store"], frame["params"])}


def test_group_tuning_feeds_training_and_changed_params_retrain_only_their_groups(spark, mlflow_ctx, inputs):
    root, tune_rows, train_rows = inputs
    tuned = str(root / "tuned_table")
    common = dict(input_path=tune_rows, label_col="y", estimator=RIDGE, cv="3", group_cols="store",
                  model_name="tuned_groups_test", experiment=mlflow_ctx.experiment_name, location=tuned)
    report = tune(spark, param_grid='{"alpha": [0.001, 100000.0]}', **common)
    best = report.result.best.set_index("store")["best_params"]
    assert best[0] == {"alpha": 0.001} and best[1] == {"alpha": 100000.0} and best[2] == {"alpha": 0.001}
    assert f"model table       {tuned}" in report.summary()

    train = dict(group_cols=["store"], feature_cols=FEATURES, label_col="y", estimator=RIDGE, params={"alpha": 2.0},
                 model_name="tuned_router_test", experiment=mlflow_ctx.experiment_name,
                 location=str(root / "models"), fmt="parquet", params_from=tuned, retrain="changed")
    first = train_and_register(spark, train_rows, **train)
    # each tuned group its own best alpha, over estimator_params; the untuned group 3 estimator_params
    assert _alphas(spark, first.table) == {0: 0.001, 1: 100000.0, 2: 0.001, 3: 2.0}
    row = first.table.read(spark).where("store = 1").select("model", "model_sha256").first()
    assert model_bytes.loads(bytes(row["model"]), row["model_sha256"], where="test").alpha == 100000.0
    assert first.table.counts["ok"] == 4

    again = train_and_register(spark, train_rows, **train)  # nothing changed: every group carried over
    assert again.table.extra["retrain"]["trained"] == 0 and again.table.extra["retrain"]["carried"] == 4

    tune(spark, param_grid='{"alpha": [0.01, 100000.0]}', **common)  # stores 0 and 2 get a new best alpha
    second = train_and_register(spark, train_rows, **train)
    assert second.table.extra["retrain"]["trained"] == 2 and second.table.extra["retrain"]["carried"] == 2
    assert _alphas(spark, second.table) == {0: 0.01, 1: 100000.0, 2: 0.01, 3: 2.0}


def test_params_from_of_another_estimator_or_nowhere_is_refused_before_training(spark, mlflow_ctx, inputs, tmp_path):
    root, _, train_rows = inputs
    train = dict(group_cols=["store"], feature_cols=FEATURES, label_col="y", model_name="tuned_refused_test",
                 experiment=mlflow_ctx.experiment_name, location=str(tmp_path / "models"), fmt="parquet")
    with pytest.raises(InputError, match=r"params_from=.*no committed model table there.*manymodels tune"):
        train_and_register(spark, train_rows, estimator=RIDGE, params_from=str(tmp_path / "nothing"), **train)
    tuned = str(root / "tuned_table")  # written by the test above (module order), else by this tune
    if not (Path(tuned) / "_CURRENT").exists():
        tune(spark, input_path=inputs[1], label_col="y", estimator=RIDGE, param_grid='{"alpha": [1.0, 2.0]}',
             group_cols="store", experiment=mlflow_ctx.experiment_name, location=tuned)
    with pytest.raises(InputError, match=r"'alpha'.*not parameters of LinearRegression"):
        train_and_register(spark, train_rows, estimator="sklearn.linear_model.LinearRegression", params_from=tuned,
                           **train)


def test_global_tune_on_an_input_compares_on_a_bounded_sample(spark, mlflow_ctx, inputs, monkeypatch):
    monkeypatch.setattr(tuning, "COMPARE_MAX_ROWS", 100)
    _, _, train_rows = inputs
    report = tune(spark, input_path=train_rows, label_col="y", estimator=RIDGE, param_grid='{"alpha": [0.1, 10.0]}',
                  feature_cols="x0,x1", model_name="tuned_global_test", catalog="cat", schema="sch",
                  experiment=mlflow_ctx.experiment_name, compare="true")
    assert report.result.spec.feature_cols == ("x0", "x1")
    notes = report.comparison.set_index("approach")["note"]
    assert "on a sample of 100 of 600 rows" in notes["driver thread pool"]
    assert "skipped" in notes["MLlib CrossValidator"] and "(600 rows)" in notes["manymodels search"]
    assert report.logged.model_uri == "models:/cat.sch.tuned_global_test@champion"
    plain = tune(spark, input_path=train_rows, label_col="y", estimator=RIDGE, param_grid='{"alpha": [0.1]}',
                 model_name="tuned_global_test", experiment=mlflow_ctx.experiment_name)
    assert plain.comparison["approach"].tolist() == ["manymodels search"]  # compare is off by default


def test_global_tune_above_the_row_bound_is_refused_naming_the_fix(spark, inputs):
    with pytest.raises(InputError, match=r"600 rows.*limited to 500 rows.*group_cols.*sample"):
        tune(spark, input_path=inputs[2], label_col="y", estimator=RIDGE, param_grid='{"alpha": [1.0]}',
             experiment="never-created-tuned", max_rows=500)
