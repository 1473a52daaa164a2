"""A driver killed during MLflow logging, then the same training run rerun: no duplicates, and until a run
commits, readers see the previous model table and the previous alias.

Each training run is a child process (``crash_train.py``) on local Spark and the sqlite MLflow store of one
MANYMODELS_HOME; the child SIGKILLs itself at the chosen point, as a lost driver stops (no cleanup runs).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from manymodels.core.panel import make_panel
from manymodels.core.spec import PanelSpec
from manymodels.storage import model_table
from manymodels.tracking.context import RUN_TAG

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parents[1] / "support"  # the child-process scripts
N_GROUPS = 300
MODEL = "crash_model"


def child(home: Path, data: Path, location: Path, run: str, crash: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MANYMODELS_HOME": str(home), "PYTHONUNBUFFERED": "1", "MANYMODELS_PROGRESS_SECONDS": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, str(HERE / "crash_train.py"), str(data), str(location), run, crash],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=home,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        try:  # the driver JVM exits when its Python parent goes; make sure of it
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def completed(proc) -> dict:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(next(ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("RESULT "))[7:])


def killed(proc) -> None:
    assert proc.returncode == -signal.SIGKILL, f"expected SIGKILL, got exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert "RESULT " not in proc.stdout


class Store:
    """What a reader sees: the committed model table and the registry, from this process."""

    def __init__(self, home: Path, location: Path):
        uri = f"sqlite:///{home / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.location = str(location)

    def pointer(self) -> dict:
        return model_table.current(self.location)

    def table(self) -> pd.DataFrame:
        return pd.read_parquet(self.pointer()["version"], columns=["store", "item", "training_run_id"])

    def alias(self) -> str:
        return str(self.client.get_model_version_by_alias(MODEL, "champion").version)

    def versions(self, run: str | None = None) -> list:
        found = self.client.search_model_versions(f"name = '{MODEL}'")
        return [v for v in found if run is None or v.tags.get(RUN_TAG) == run]

    def runs(self, run: str | None = None) -> list:
        exp = self.client.get_experiment_by_name("crash")
        found = self.client.search_runs([exp.experiment_id], max_results=1000)
        return [r for r in found if run is None or r.data.tags.get(RUN_TAG) == run]

    def group_models(self, run_id: str) -> int:
        return sum(1 for store in self.client.list_artifacts(run_id, "models")
                   for _ in self.client.list_artifacts(run_id, store.path))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rows, _ = make_panel(PanelSpec(n_groups=N_GROUPS, mean_rows=30, n_features=3, seed=8))
    path = tmp_path_factory.mktemp("crash_input") / "panel"
    path.mkdir()
    rows.to_parquet(path / "part-0.parquet", index=False)
    return path


def test_a_driver_killed_while_logging_then_rerun_leaves_no_duplicates(tmp_path, data):
    home, location = tmp_path / "home", tmp_path / "table"
    home.mkdir()
    store = Store(home, location)
    first = completed(child(home, data, location, "run-1", "none"))
    assert first["counts"]["ok"] == N_GROUPS and store.alias() == first["model_version"] == "1"
    # Two faults, each on its own training run: killed while uploading the group models (nothing
    # registered yet), and killed just after the router version was registered (before the commit).
    for number, crash in ((2, "logging"), (3, "registered")):
        run, previous_run, previous_version = f"run-{number}", f"run-{number - 1}", str(number - 1)
        before = store.pointer()
        killed(child(home, data, location, run, crash))
        # Readers still see the previous, complete state: table, pointer and alias.
        assert store.pointer() == before
        table = store.table()
        assert len(table) == N_GROUPS and table["training_run_id"].eq(previous_run).all()
        assert store.alias() == previous_version
        assert len(store.versions(run)) == (1 if crash == "registered" else 0)
        assert len(store.runs(run)) == 1  # the crashed run's MLflow run, to be reused by the rerun

        again = completed(child(home, data, location, run, "none"))
        assert again["reused"] == (crash == "registered")  # a version registered before the crash is reused
        runs, versions = store.runs(run), store.versions(run)
        assert len(runs) == 1 and runs[0].info.run_id == again["run_id"] and runs[0].info.status == "FINISHED"
        assert len(versions) == 1 and str(versions[0].version) == again["model_version"] == str(number)
        assert store.group_models(again["run_id"]) == N_GROUPS  # one artifact per group, none twice
        assert store.alias() == str(number) and len(store.versions()) == number and len(store.runs()) == number
        pointer = store.pointer()
        assert pointer["training_run_id"] == run and pointer["version"] == again["version"]
        table = store.table()
        assert len(table) == N_GROUPS and not table.duplicated(["store", "item"]).any()
        assert table["training_run_id"].eq(run).all()


@pytest.fixture(scope="module")
def other_data(tmp_path_factory) -> Path:
    rows, _ = make_panel(PanelSpec(n_groups=N_GROUPS, mean_rows=30, n_features=3, seed=8))
    path = tmp_path_factory.mktemp("crash_input_changed") / "panel"
    path.mkdir()
    rows.assign(y=rows["y"] * 2).to_parquet(path / "part-0.parquet", index=False)
    return path


def test_a_run_id_registered_before_a_crash_is_refused_on_new_data_and_reused_on_its_own(tmp_path, data,
                                                                                         other_data):
    """The same training run id after a crash, rerun on other data: refused before anything is written (its
    registered version names other models); rerun on its own data: reused, committed and aliased."""
    home, location = tmp_path / "home", tmp_path / "table"
    home.mkdir()
    store = Store(home, location)
    completed(child(home, data, location, "run-1", "none"))
    killed(child(home, data, location, "run-2", "registered"))
    before, tables = store.pointer(), model_table.versions(str(location))

    refused = child(home, other_data, location, "run-2", "none")
    assert refused.returncode != 0 and "TrainingRunConflict" in refused.stderr
    assert "training_run_id 'run-2' is already recorded" in refused.stderr
    assert store.pointer() == before and store.alias() == "1"  # readers see run-1, as before the rerun
    assert model_table.versions(str(location)) == tables  # no model table version written
    assert len(store.versions("run-2")) == 1 and len(store.versions()) == 2

    again = completed(child(home, data, location, "run-2", "none"))
    assert again["reused"] and again["model_version"] == "2" and store.alias() == "2"
    assert store.pointer()["training_run_id"] == "run-2"
