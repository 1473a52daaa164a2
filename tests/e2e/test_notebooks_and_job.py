"""The notebooks run unchanged as plain scripts with their default parameters, and the README's main job runs."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))


def run(args, home, timeout=900):
    env = {**os.environ, "MANYMODELS_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=home, timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_databricks_source_files(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "# Databricks notebook source"
    assert "# COMMAND ----------" in lines
    assert "sys.path" not in path.read_text()


def test_prepare_then_train_notebooks_run_locally(tmp_path):
    out = run([sys.executable, str(ROOT / "notebooks" / "01_prepare_data.py")], tmp_path)
    assert "training rows of 1000 groups" in out
    assert len(list((tmp_path / "data" / "panel" / "gzip").glob("*.csv.gz"))) == 1000
    out = run([sys.executable, str(ROOT / "notebooks" / "02_train_per_group.py")], tmp_path)
    assert "1000 trained: 1000 ok, 0 failed, 0 skipped" in out
    assert "models:/manymodels_router@champion (version 1)" in out
    out = run([sys.executable, str(ROOT / "notebooks" / "05_batch_inference.py")], tmp_path)
    assert "with manymodels_router/1" in out and "status: {'ok': " in out
    assert "unknown_group" not in out  # every group of the training input has a model


def test_main_job_trains_registers_and_scores(tmp_path):
    out = run([sys.executable, "-m", "manymodels.jobs.cli", "main", "--n-groups", "60", "--mean-rows", "80"], tmp_path)
    assert "60 trained: 60 ok, 0 failed, 0 skipped" in out
    assert "rows scored via models:/manymodels_router@champion" in out
    assert "not scored: {'unknown_group': 2}" in out
    assert "mlflow ui --backend-store-uri sqlite:///" in out and "--host 127.0.0.1" in out
