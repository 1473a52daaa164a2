"""Two training runs at the same time against one MLflow tracking server (issue 7, part 6).

The test starts `mlflow server` on 127.0.0.1 (sqlite backend and artifact store in its tmp folder, artifacts
served through the server), then two child processes (tests/concurrent_train.py), each with its own local[1]
Spark and MANYMODELS_HOME, run the job entry point ``jobs.train_and_register`` with the same experiment and
registered model name and different training run ids. The children start Spark first and begin training
only when the parent has seen both ready, so the runs overlap; their printed timestamps show by how much.

Both must complete with their own MLflow run (tagged with their training run id), their own model table,
their own registered version of the shared model (tagged with their run id, made from their run), complete
artifacts (one model file per group, the router's packed store with one row per group), and the alias must
point to one of the two versions.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from processes import mlflow_server, stop_group

ROOT = Path(__file__).resolve().parents[2]
CHILD = ROOT / "tests" / "support" / "concurrent_train.py"
EXPERIMENT = "concurrent"
MODEL = "concurrent_router"
ALIAS = "champion"
RUN_IDS = ("concurrent-a", "concurrent-b")
KEYS = ("store", "item")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking_server")
    with mlflow_server(f"sqlite:///{root / 'mlflow.db'}", ["--artifacts-destination", (root / "artifacts").as_uri()],
                       root / "server.log", workers=2, timeout=180) as url:
        yield url


@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    from manymodels.core.panel import make_panel
    from manymodels.core.spec import PanelSpec

    rows, _ = make_panel(PanelSpec(n_groups=300, mean_rows=40, n_features=3, seed=21))
    path = tmp_path_factory.mktemp("concurrent_input") / "panel.parquet"
    rows.to_parquet(path, index=False)
    return str(path), rows[list(KEYS)].drop_duplicates()


def start_child(run_id: str, input_path: str, url: str, tmp: Path, table: Path | None = None,
                model: str = MODEL, experiment: str = EXPERIMENT) -> tuple[subprocess.Popen, Path]:
    home = tmp / f"home-{run_id}"
    home.mkdir()
    env = {**os.environ, "MANYMODELS_HOME": str(home), "MLFLOW_TRACKING_URI": url, "PYTHONUNBUFFERED": "1",
           "MANYMODELS_PROGRESS_SECONDS": "1000"}
    env.pop("SPARK_REMOTE", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    args = {"run_id": run_id, "input": input_path, "model_name": model, "alias": ALIAS, "experiment": experiment,
            "table": str(table or home / "tables" / "model_table")}
    log = tmp / f"{run_id}.stderr"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, str(CHILD), json.dumps(args)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=home,
                                start_new_session=True)
    return proc, log


@contextmanager
def server_uris(url: str, session):
    """``models:/`` URIs resolve through the process-wide registry URI: point it at the server, then back to the
    session's store (``session``: the ``mlflow_ctx`` fixture), never to MLflow's default ``./mlflow.db``."""
    import mlflow

    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(session.tracking_uri)
        mlflow.set_registry_uri(session.registry_uri)


def overlap(a: list[float], b: list[float]) -> float:
    return min(a[1], b[1]) - max(a[0], b[0])


def run_together(children: list, run_ids) -> dict:
    """Start the children's training together; their ``RESULT`` lines by run id."""
    results = {}
    try:
        for (proc, log), run_id in zip(children, run_ids):  # both Spark sessions up before either trains
            line = proc.stdout.readline()
            assert line.strip() == "READY", f"{run_id} did not start: {line!r}\n{log.read_text()[-3000:]}"
        for proc, _ in children:
            proc.stdin.write("GO\n")
            proc.stdin.flush()
        for (proc, log), run_id in zip(children, run_ids):
            out, _ = proc.communicate(timeout=900)
            assert proc.returncode == 0, \
                f"{run_id} failed ({proc.returncode}):\n{out[-2000:]}\n{log.read_text()[-5000:]}"
            found = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
            assert found, f"{run_id} printed no result:\n{out[-2000:]}"
            results[run_id] = json.loads(found[-1][len("RESULT "):])
    finally:
        for proc, _ in children:
            stop_group(proc)
    return results


@pytest.mark.slow
def test_two_training_runs_on_one_location_end_with_its_table_and_the_alias_on_the_same_run(server, panel,
                                                                                             tmp_path):
    """Two runs at once committing to ONE model-table location and moving one alias: whatever the order of their
    commits and alias writes, the location's current table and the alias name the same run, and that table is
    complete."""
    from mlflow import MlflowClient

    from manymodels.storage import model_table
    from manymodels.tracking.context import RUN_TAG

    input_path, groups = panel
    shared, run_ids = tmp_path / "shared_table", ("one-location-a", "one-location-b")
    results = run_together([start_child(r, input_path, server, tmp_path, shared, "one_location_router",
                                        "one_location")
                            for r in run_ids], run_ids)
    client = MlflowClient(tracking_uri=server, registry_uri=server)
    pointer = model_table.current(str(shared))
    alias = client.get_model_version_by_alias("one_location_router", ALIAS)
    assert alias.tags[RUN_TAG] == pointer["training_run_id"] in run_ids
    assert pointer["registered"] == f"one_location_router/{alias.version}"
    assert pointer["version"] == results[pointer["training_run_id"]]["table_version"]
    rows = pd.read_parquet(pointer["version"], columns=[*KEYS, "training_run_id", "status"])
    assert len(rows) == len(groups) and set(rows["training_run_id"]) == {pointer["training_run_id"]}
    assert len(model_table.versions(str(shared))) == 2  # both written; one current


@pytest.mark.slow
def test_two_training_runs_at_once_against_one_tracking_server(server, panel, tmp_path, mlflow_ctx):
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from manymodels.core.keys import canonical_key, key_path
    from manymodels.storage import model_table
    from manymodels.storage.packed_store import MODELS_FILE
    from manymodels.tracking.context import RUN_TAG

    input_path, groups = panel
    results = run_together([start_child(run_id, input_path, server, tmp_path) for run_id in RUN_IDS], RUN_IDS)

    a, b = (results[r] for r in RUN_IDS)
    wall, logging = overlap([a["start"], a["end"]], [b["start"], b["end"]]), overlap(a["log"], b["log"])
    training = overlap(a["train"], b["train"])
    print(f"\nconcurrent runs: wall {a['end'] - a['start']:.1f} s and {b['end'] - b['start']:.1f} s, overlapping "
          f"{wall:.1f} s; training phases overlap {training:.1f} s; MLflow logging phases "
          f"{a['log'][1] - a['log'][0]:.1f} s and {b['log'][1] - b['log'][0]:.1f} s, overlapping {logging:.1f} s")
    (tmp_path / "overlap.json").write_text(json.dumps({"wall": wall, "training": training, "logging": logging,
                                                       "results": results}, indent=1))
    assert wall > 0 and training > 0, f"the runs did not overlap: {results}"

    n_groups = len(groups)
    client = MlflowClient(tracking_uri=server, registry_uri=server)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    assert sorted(r.data.tags.get(RUN_TAG) for r in runs) == sorted(RUN_IDS), "one MLflow run per training run"
    by_tag = {r.data.tags[RUN_TAG]: r for r in runs}
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert len(versions) == 2 and len({v.version for v in versions}) == 2, [v.version for v in versions]
    expected_paths = {f"{key_path(KEYS, tuple(k))}.pkl" for k in groups.itertuples(index=False, name=None)}
    expected_keys = sorted(canonical_key(tuple(k)) for k in groups.itertuples(index=False, name=None))
    for run_id, result in results.items():
        run = by_tag[run_id]
        assert run.info.status == "FINISHED" and run.info.run_id == result["mlflow_run_id"]
        assert result["counts"] == {"ok": n_groups, "failed": 0, "skipped": 0} and not result["reused"]
        # its own registered version, tagged with its training run id and made from its MLflow run
        mine = [v for v in versions if v.tags.get(RUN_TAG) == run_id]
        assert len(mine) == 1 and mine[0].version == result["version"] and mine[0].run_id == run.info.run_id
        # its artifacts: one model file per group, and the registered router's packed store with every group
        models = Path(client.download_artifacts(run.info.run_id, "models", str(tmp_path / f"art-{run_id}")))
        got = {str(p.relative_to(models)) for p in models.rglob("*.pkl")}
        assert got == expected_paths, f"{run_id}: {len(got)} model files for {n_groups} groups"
        with server_uris(server, mlflow_ctx):
            import mlflow

            router = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{MODEL}/{result['version']}", dst_path=str(tmp_path / f"router-{run_id}")))
        store = pd.read_parquet(next(router.rglob(MODELS_FILE)), columns=["key", "status"])
        assert sorted(tuple(k) for k in store["key"]) == expected_keys and set(store["status"]) == {"ok"}
        # its own model table: committed, one row per group, all written by this training run
        table = str(tmp_path / f"home-{run_id}" / "tables" / "model_table")
        pointer = model_table.current(table)
        assert pointer["training_run_id"] == run_id and pointer["version"] == result["table_version"]
        rows = pd.read_parquet(pointer["version"], columns=[*KEYS, "training_run_id", "status"])
        assert len(rows) == n_groups and len(rows[list(KEYS)].drop_duplicates()) == n_groups
        assert set(rows["training_run_id"]) == {run_id} and set(rows["status"]) == {"ok"}
    alias = client.get_model_version_by_alias(MODEL, ALIAS)
    assert alias.version in {a["version"], b["version"]}


def test_configure_survives_an_experiment_made_by_a_concurrent_run(tmp_path, monkeypatch, mlflow_ctx):
    """The race the concurrent runs hit: both look the experiment up, miss it, and create it; the second
    create fails with RESOURCE_ALREADY_EXISTS. ``tracking.configure`` then uses the one the other run made."""
    import mlflow

    from manymodels import tracking

    uri = f"sqlite:///{tmp_path / 'race.db'}"
    real = mlflow.get_experiment_by_name
    lookups = []

    def racing(name):
        lookups.append(name)
        if len(lookups) == 1:  # our lookup misses; the other run creates the experiment right after it
            mlflow.create_experiment(name)
            return None
        return real(name)

    monkeypatch.setattr(mlflow, "get_experiment_by_name", racing)
    with server_uris(uri, mlflow_ctx):
        ctx = tracking.configure(tracking_uri=uri, experiment="raced")
        made = real("raced")
    assert lookups == ["raced", "raced"] and ctx.experiment_id == made.experiment_id
