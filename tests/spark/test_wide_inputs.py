"""2,000 feature columns: the infinity check is one flat expression (a 2,000-deep tree of ORs overflowed the
JVM stack on classic Spark and exceeds Spark Connect's protobuf nesting limit); names are quoted."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from processes import run_connect_job
from sklearn.linear_model import LinearRegression
from wide_connect_job import INF_COL, NAN_COL, run_checks

from manymodels.errors import InputError
from manymodels.spark.training import train_per_group

HERE = Path(__file__).resolve().parents[1] / "support"  # the child-process scripts


def _assert_wide_outcome(result: dict) -> None:
    assert result["counts"] == {"ok": 2, "failed": 0, "skipped": 0}
    message = result["message"]
    assert message is not None, "an infinity in one of 2,000 columns was not refused"
    assert f"'{INF_COL}' (1 row(s))" in message and "g=1" in message, message
    assert NAN_COL not in message and "g=0" not in message, message  # NaN is the missing value, not infinity
    assert result["per_group"] == {"0": 0, "1": 1} and result["per_column"] == {INF_COL: 1}  # the checks alone


def _print_times(mode: str, result: dict) -> None:
    print(f"\n2,000 columns, {mode}: trained in {result['train_seconds']} s, refused (statistics job + error-path "
          f"count) in {result['refused_seconds']} s; alone: infinity aggregate {result['aggregate_seconds']} s, "
          f"per-column count {result['count_seconds']} s")


@pytest.mark.spark
def test_2000_features_train_and_an_infinity_in_one_column_is_named(spark, tmp_path):
    result = run_checks(spark, str(tmp_path))
    _print_times("classic Spark", result)
    _assert_wide_outcome(result)


@pytest.mark.spark
def test_quoted_names_and_a_float32_column_with_infinities_are_named(spark, tmp_path):
    odd, narrow = "a.b `c` d", "f 32"
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"g": np.repeat([0, 1], 12), odd: rng.normal(size=24),
                          narrow: rng.normal(size=24).astype("float32"), "y": rng.normal(size=24)})
    frame.loc[[2, 20], odd] = [np.inf, -np.inf]
    frame.loc[5, narrow] = -np.inf
    frame.loc[7, odd] = np.nan
    df = spark.createDataFrame(frame)
    assert dict(df.dtypes)[narrow] == "float"  # the check widens it to double next to the double column
    with pytest.raises(InputError) as caught:
        train_per_group(df, group_cols=["g"], feature_cols=[odd, narrow], label_col="y", estimator=LinearRegression(),
                        location=str(tmp_path / "table"), progress=False)
    message = str(caught.value)
    assert f"'{odd}' (2 row(s))" in message and f"'{narrow}' (1 row(s))" in message, message
    assert "g=0 (2 row(s))" in message and "g=1 (1 row(s))" in message, message


@pytest.mark.slow
def test_2000_features_train_and_an_infinity_is_named_under_spark_connect(tmp_path):
    result, _ = run_connect_job(HERE / "wide_connect_job.py", tmp_path)
    _print_times("Spark Connect", result)
    assert result["connect"] is True
    _assert_wide_outcome(result)
