"""The promotion gate on the real local MLflow registry: a champion, then challengers trained on the same panel that
are refused (worse) or promoted (better), and a dry run that only writes the verdict."""
from __future__ import annotations

import pytest
from mlflow import MlflowClient
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression, Ridge

from manymodels import tracking
from manymodels.errors import InputError, QualityGateError
from manymodels.spark.training import train_per_group
from manymodels.tracking import promotion

pytestmark = pytest.mark.spark
NAME = "gate_tests"
FEATURES = ["x0", "x1", "x2"]


@pytest.fixture(scope="module")
def register(spark, mlflow_ctx, small_panel, tmp_path_factory):
    """``register(run_id, estimator, alias)``: train the small panel (40 groups) and register it under ``alias``."""
    _, rows, _ = small_panel
    df = spark.createDataFrame(rows)

    def run(training_run_id: str, estimator, alias: str) -> str:
        table = train_per_group(df, group_cols=["store", "item"], feature_cols=FEATURES, label_col="y",
                                estimator=estimator, training_run_id=training_run_id,
                                location=str(tmp_path_factory.mktemp(training_run_id) / "table"))
        return tracking.log_training(spark, table, mlflow_ctx, name=NAME, alias=alias).version

    return run


@pytest.fixture(scope="module")
def champion(register):
    """A strongly regularized ridge: a fair model that a plain linear regression beats on this linear panel."""
    return register("gate-champion", Ridge(alpha=200.0), "champion")


def alias_version(alias: str) -> str:
    return str(MlflowClient().get_model_version_by_alias(NAME, alias).version)


def version(v: str):
    return MlflowClient().get_model_version(NAME, v)


def test_a_worse_challenger_is_refused_and_says_why(register, champion):
    worse = register("gate-worse", DummyRegressor(), "challenger")
    with pytest.raises(QualityGateError, match=r"failed the quality gate; @champion stays at v") as refused:
        promotion.promote(NAME, log=lambda line: None)
    assert "max_median_worse 0.05" in str(refused.value)
    assert refused.value.promotion.verdict.metric == "holdout_rmse" and not refused.value.promotion.promoted
    assert alias_version("champion") == champion
    tags, described = version(worse).tags, version(worse).description
    assert tags["manymodels.gate.passed"] == "false" and tags["manymodels.gate.metric"] == "holdout_rmse"
    assert tags["manymodels.gate.compared_with"] == champion and tags["manymodels.gate.shared_groups"] == "40"
    assert float(tags["manymodels.gate.median_challenger"]) > float(tags["manymodels.gate.median_champion"])
    assert float(tags["manymodels.gate.worse_fraction"]) > 0.5
    assert f"manymodels quality gate against @champion v{champion}\nquality gate FAILED" in described
    assert described.index("Promotion gate") > described.index("gate-worse")  # below the training summary, kept

    # gated again with no champion to compare with: the figures of the earlier comparison do not linger
    again = promotion.promote(NAME, champion_alias="nobody_yet", dry_run=True, log=lambda line: None)
    assert again.version == int(worse) and not again.verdict.compared
    tags, described = version(worse).tags, version(worse).description
    assert tags["manymodels.gate.compared_with"] == "none" and tags["manymodels.gate.passed"] == "true"
    assert not {"manymodels.gate.median_champion", "manymodels.gate.shared_groups"} & set(tags)
    assert "FAILED" not in described and described.count("Promotion gate") == 1 and "gate-worse" in described


def test_a_dry_run_writes_the_verdict_and_moves_nothing_then_a_better_challenger_is_promoted(register, champion):
    better = register("gate-better", LinearRegression(), "challenger")
    dry = promotion.promote(NAME, dry_run=True, log=lambda line: None)
    assert dry.verdict.passed and not dry.promoted and dry.compared_with == int(champion)
    assert alias_version("champion") == champion
    assert version(better).tags["manymodels.gate.passed"] == "true"
    assert "quality gate PASSED" in version(better).description

    done = promotion.promote(NAME, log=lambda line: None)
    assert done.promoted and done.version == int(better) and done.verdict.relative_change < 0
    assert alias_version("champion") == better


def test_without_a_champion_only_the_ok_fraction_counts_and_a_missing_challenger_names_the_fix(register, champion):
    first = promotion.promote(NAME, alias="champion", champion_alias="nobody_yet", dry_run=True,
                              log=lambda line: None)
    assert first.verdict.passed and not first.verdict.compared and first.compared_with is None
    assert version(str(first.version)).tags["manymodels.gate.compared_with"] == "none"
    with pytest.raises(InputError, match="has no version with alias @nobody_yet"):
        promotion.promote(NAME, alias="nobody_yet", log=lambda line: None)
