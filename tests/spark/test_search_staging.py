"""Search staging that cannot serve wrong data: one staged file per run (concurrent searches of one frame do not
delete each other's), every staged file verified on the worker against the driver's SHA-256, a worker cache key
that sees everything that changes the folds, and a per-user Volume folder on Databricks."""
import re
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge, RidgeClassifier

from manymodels.core import search as S
from manymodels.spark import search as spark_search
from manymodels.spark.search import _unstage, default_staging, search, stage
from manymodels.storage.staging import staging_root

FEATURES = ["x0", "x1", "x2"]
GRID = {"alpha": [0.1, 10.0]}


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(5)
    pdf = pd.DataFrame(rng.normal(size=(60, 3)), columns=FEATURES)
    pdf["y"] = pdf @ np.array([1.0, -2.0, 0.5]) + rng.normal(scale=0.1, size=60)
    return pdf


def spec_for(estimator=None, search_id="unit", **kw):
    return S.make_search_spec(estimator=estimator or Ridge(), feature_cols=FEATURES, label_col="y", param_grid=GRID,
                              search_id=search_id, **kw)


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------- one file per run (no Spark)

def test_each_stage_call_writes_its_own_file_and_unstage_deletes_only_it(frame, tmp_path):
    spec = spec_for(cv=3)
    a, b = stage(frame, spec, str(tmp_path)), stage(frame, spec, str(tmp_path))
    assert a.path != b.path and a.fingerprint == b.fingerprint  # same content, two runs, two files
    assert a.checksums[0][1] == b.checksums[0][1] and a.search_id == "unit" and Path(a.path).name.startswith("unit-")
    _unstage(a)
    assert not Path(a.path).exists()
    S.load_dataset(b, spec)  # the other run's file is intact and verifies
    _unstage(b)
    assert files_under(tmp_path) == []


# ---------------------------------------------------------------- verified on read (no Spark)

def test_a_staged_file_rewritten_after_staging_is_refused_with_the_file_and_search_named(frame, tmp_path):
    spec = spec_for(cv=3, search_id="tamper-unit")
    staged = stage(frame, spec, str(tmp_path))
    frame.assign(y=frame["y"] * 2.0)[S.staged_columns(spec)].to_parquet(staged.path, index=False)  # valid Parquet
    name = re.escape(Path(staged.path).name)
    with pytest.raises(S.StagedDataError, match=rf"search tamper-unit .*file '{name}' has SHA-256 .*Rerun the search"):
        S.load_dataset(staged, spec)
    with pytest.raises(S.StagedDataError, match=rf"file '{name}' has SHA-256"):
        S.read_staged(staged.path, S.staged_columns(spec), staged.checksums, search_id=staged.search_id)
    with pytest.raises(S.StagedDataError, match="no checksums were recorded"):
        S.read_staged(staged.path, S.staged_columns(spec), ())
    Path(staged.path).unlink()
    with pytest.raises(S.StagedDataError, match="does not exist any more"):
        S.load_dataset(staged, spec)


def test_missing_or_extra_part_files_of_a_staged_folder_are_refused(frame, tmp_path):
    spec = spec_for(cv=3, search_id="parts")
    folder = tmp_path / "parts-spark"
    folder.mkdir()
    frame.iloc[:30].to_parquet(folder / "part-00000.parquet", index=False)
    frame.iloc[30:].to_parquet(folder / "part-00001.parquet", index=False)
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".part-00000.parquet.crc").write_bytes(b"crc")
    staged = S.Staged(str(folder), "fp", 60, S.file_checksums(str(folder)), "parts")
    assert [n for n, _ in staged.checksums] == ["part-00000.parquet", "part-00001.parquet"]
    pd.testing.assert_frame_equal(S.read_staged(staged.path, list(frame.columns), staged.checksums), frame)
    frame.iloc[:5].to_parquet(folder / "part-00002.parquet", index=False)
    with pytest.raises(S.StagedDataError, match=r"unexpected file\(s\) 'part-00002.parquet'"):
        S.load_dataset(staged, spec)
    (folder / "part-00002.parquet").unlink()
    (folder / "part-00001.parquet").unlink()
    with pytest.raises(S.StagedDataError, match=r"file\(s\) 'part-00001.parquet' are missing"):
        S.load_dataset(staged, spec)


# ---------------------------------------------------------------- the worker cache key

def test_worker_cache_key_differs_by_task_and_the_folds_follow_it(tmp_path):
    # sorted labels: the test folds of a plain k-fold hold one class each
    pdf = pd.DataFrame({"x0": np.arange(60.0), "x1": np.arange(60.0) % 7, "x2": np.arange(60.0) % 5,
                        "t": np.arange(60)[::-1], "g": np.arange(60) % 6, "y": [0] * 30 + [1] * 30})
    pdf.to_parquet(tmp_path / "data.parquet", index=False)
    staged = S.Staged(str(tmp_path / "data.parquet"), "fp", 60, S.file_checksums(str(tmp_path / "data.parquet")), "k")
    regressor, classifier = spec_for(Ridge(), cv=3), spec_for(RidgeClassifier(), cv=3)
    assert S.dataset_key(staged, regressor) != S.dataset_key(staged, classifier)
    a, b = S.load_dataset(staged, regressor), S.load_dataset(staged, classifier)
    assert a is not b
    assert set(pdf["y"].iloc[a.splits[0][1]]) == {0}  # KFold for a regressor
    assert set(pdf["y"].iloc[b.splits[0][1]]) == {0, 1}  # StratifiedKFold for a classifier
    # and every other input of the folds is in the key
    others = [spec_for(Ridge(), cv="kfold", n_splits=3, shuffle=True, seed=1),
              spec_for(Ridge(), cv="kfold", n_splits=3, shuffle=True, seed=2), spec_for(Ridge(), cv=4),
              spec_for(Ridge(), cv=3, order_col="t"), spec_for(Ridge(), cv="group", n_splits=3, cv_groups_col="g")]
    keys = {S.dataset_key(staged, s) for s in [regressor, *others]}
    assert len(keys) == 1 + len(others)
    changed = S.Staged(staged.path, staged.fingerprint, 60, (("data.parquet", "0" * 64),), "k")
    assert S.dataset_key(changed, regressor) != S.dataset_key(staged, regressor)


# ---------------------------------------------------------------- default staging: one root, per-user search folders

def test_default_staging_on_databricks_is_a_per_user_folder_of_the_volume_staging_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MANYMODELS_STAGING", raising=False)
    monkeypatch.delenv("MANYMODELS_USER", raising=False)
    for name in ("MANYMODELS_CATALOG", "MANYMODELS_SCHEMA", "MANYMODELS_VOLUME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    monkeypatch.setattr("getpass.getuser", lambda: "ann.lee@example.com")
    assert default_staging() == "/Volumes/main/manymodels/manymodels_data/_staging/search/ann.lee_example.com"
    monkeypatch.setenv("MANYMODELS_CATALOG", "cat")
    monkeypatch.setenv("MANYMODELS_SCHEMA", "sch")
    monkeypatch.setenv("MANYMODELS_VOLUME", "vol")
    ann = default_staging()
    assert ann == "/Volumes/cat/sch/vol/_staging/search/ann.lee_example.com"
    assert str(staging_root()) == "/Volumes/cat/sch/vol/_staging"  # model stores share the root: <root>/models

    class Session:  # the Unity Catalog user of the session (current_user()) wins over the login name
        def sql(self, query):
            assert query == "SELECT current_user()"
            return self

        def first(self):
            return ["bob/../x@example.com"]

    bob = default_staging(Session())
    assert bob == "/Volumes/cat/sch/vol/_staging/search/bob_.._x_example.com" and bob != ann
    monkeypatch.setenv("MANYMODELS_USER", "carol")
    assert default_staging(Session()).endswith("/_staging/search/carol")
    for path in (ann, bob):
        assert path.startswith("/Volumes/") and "/dbfs" not in path
    monkeypatch.setenv("MANYMODELS_STAGING", "/Volumes/x/y/z/mine")  # the setting wins, on Databricks too
    assert default_staging() == "/Volumes/x/y/z/mine/search/carol"
    assert default_staging(staging=str(tmp_path)) == str(tmp_path / "search" / "carol")  # an explicit folder first
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION")
    monkeypatch.delenv("MANYMODELS_STAGING")
    home = tmp_path / "home"
    monkeypatch.setenv("MANYMODELS_HOME", str(home))
    assert staging_root() == home / "staging" and default_staging() == str(home / "staging" / "search" / "carol")


# ---------------------------------------------------------------- on Spark

@pytest.mark.spark
def test_two_concurrent_searches_of_one_frame_both_succeed_and_leave_nothing_staged(spark, frame, tmp_path,
                                                                                       monkeypatch):
    """The second search runs its tasks only after the first has finished (and cleaned up): with one shared
    content-addressed file, the first would have deleted the file the second's workers still have to read."""
    staging = tmp_path / "staging"
    both_staged, first_done = threading.Barrier(2, timeout=120), threading.Event()
    real, seen, results, errors = spark_search._run_phases, {}, {}, {}

    def run_phases(spark_, spec, staged, n_bins):
        seen[spec.search_id] = staged.path
        both_staged.wait()
        if spec.search_id == "second":
            assert first_done.wait(120)
        return real(spark_, spec, staged, n_bins)

    monkeypatch.setattr(spark_search, "_run_phases", run_phases)

    def run(name, cv):
        try:  # different cv: the second search cannot be served from a worker's cache of the first's data
            results[name] = search(spark, frame, label_col="y", estimator=Ridge(), param_grid=GRID, cv=cv,
                                   scoring="r2", staging=str(staging), search_id=name, refit_best=name == "second")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors[name] = exc
        finally:
            if name == "first":
                first_done.set()

    threads = [threading.Thread(target=run, args=("first", 3)), threading.Thread(target=run, args=("second", 4))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert seen["first"] != seen["second"]
    for name, cv in (("first", 3), ("second", 4)):
        spec = spec_for(cv=cv, scoring="r2", search_id=name)
        _, expected = S.search_local(frame, spec)
        np.testing.assert_allclose(results[name].cv_results["mean_test_score"], expected["mean_test_score"],
                                   atol=1e-12)
    assert results["second"].best_estimator is not None
    assert files_under(staging) == []


@pytest.mark.spark
def test_a_search_whose_staged_data_changes_under_it_fails_with_the_file_named(spark, frame, tmp_path, monkeypatch):
    staging, real, seen = tmp_path / "staging", spark_search._run_phases, {}

    def run_phases(spark_, spec, staged, n_bins):
        seen["path"] = staged.path
        frame.assign(y=-frame["y"])[S.staged_columns(spec)].to_parquet(staged.path, index=False)
        return real(spark_, spec, staged, n_bins)

    monkeypatch.setattr(spark_search, "_run_phases", run_phases)
    with pytest.raises(S.StagedDataError, match=r"search tampered at .*has SHA-256 .*Rerun the search"):
        search(spark, frame, label_col="y", estimator=Ridge(), param_grid=GRID, cv=3, staging=str(staging),
               search_id="tampered", refit_best=False)
    assert Path(seen["path"]).name.startswith("tampered-") and files_under(staging) == []
