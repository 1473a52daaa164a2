"""Training and scoring through Spark Connect: a local Connect server started from the installed pyspark
(SPARK_REMOTE=local[2]), in its own process so it does not meet the tests' classic session."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent


def test_train_and_score_per_group_and_single_model_under_spark_connect(tmp_path):
    env = {**os.environ, "SPARK_REMOTE": "local[2]", "MANYMODELS_HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(HERE / "connect_job.py"), str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert result["connect"] is True
    assert result["counts"] == {"ok": 30, "failed": 0, "skipped": 0}
    assert result["per_group_ok"] == result["rows"] and result["single_matches"]
    assert result["classified"] and result["proba_sums"]
    assert "manymodels: training" in proc.stdout and "30 of 30 groups done" in proc.stdout  # progress via Connect
