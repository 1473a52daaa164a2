"""Training and scoring through Spark Connect: a local Connect server started from the installed pyspark
(SPARK_REMOTE=local[2]), in its own process so it does not meet the tests' classic session."""
from pathlib import Path

import pytest
from processes import run_connect_job

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parents[1] / "support"  # the child-process scripts


def test_train_and_score_per_group_and_single_model_under_spark_connect(tmp_path):
    result, stdout = run_connect_job(HERE / "connect_job.py", tmp_path, timeout=600)
    assert result["connect"] is True
    assert result["counts"] == {"ok": 30, "failed": 0, "skipped": 0}
    assert result["per_group_ok"] == result["rows"] and result["single_matches"]
    assert result["classified"] and result["proba_sums"]
    assert "manymodels: training" in stdout and "30 of 30 groups done" in stdout  # progress via Connect
