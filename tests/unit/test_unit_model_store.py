"""Folder locations of model_store (pointer, copies, pruning) and the table-format setting: no Spark.

The version folders are made by hand (one empty data file each) because prune only looks at names, times
and the committed pointer; a Spark test in test_spark_retrain.py prunes real versions and reads the table,
and tests/test_table_locations.py covers table-name locations."""
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from manymodels import settings
from manymodels.errors import InputError
from manymodels.storage import model_table

HOUR = 3600.0


def make_versions(location: Path, names_and_ages: list[tuple[str, float]]) -> list[Path]:
    now = time.time()
    out = []
    for name, age_hours in names_and_ages:
        path = location / "_versions" / name
        path.mkdir(parents=True)
        (path / "part-0.parquet").write_bytes(b"x")
        os.utime(path, (now - age_hours * HOUR, now - age_hours * HOUR))
        out.append(path)
    return out


def test_prune_keeps_current_newest_and_young_versions(tmp_path):
    location = tmp_path / "table"
    v = make_versions(location, [("20260101T000000-a", 900), ("20260102T000000-b", 800), ("20260103T000000-c", 700),
                                 ("20260104T000000-d", 600), ("20260105T000000-e", 1)])
    model_table.commit_version(str(location), str(v[1]), "b")  # an older run is current (e.g. rolled back)
    deleted = model_table.prune(str(location), keep=2, min_age_hours=24)
    assert deleted == [str(v[0]), str(v[2])]  # a and c: old, not current, not among the newest 2 (d, e)
    assert model_table.versions(str(location)) == [v[1], v[3], v[4]]
    assert model_table.current(str(location))["version"] == str(v[1])
    assert model_table.prune(str(location), keep=0, min_age_hours=24) == [str(v[3])]  # e is younger than a day
    assert model_table.prune(str(location), keep=0, min_age_hours=0) == [str(v[4])]  # only the current one left
    assert model_table.versions(str(location)) == [v[1]]


def test_prune_of_an_empty_location_and_one_never_committed(tmp_path):
    location = tmp_path / "table"
    assert model_table.prune(str(location)) == [] and model_table.versions(str(location)) == []
    # Versions but no _CURRENT: which one readers use is unknown, so even keep=0, min_age_hours=0 deletes nothing.
    v = make_versions(location, [("20260101T000000-killed", 100), ("20260102T000000-live", 50)])
    with pytest.raises(model_table.PruneRefused, match=r"2 version\(s\) but no _CURRENT.*nothing was deleted"):
        model_table.prune(str(location), keep=0, min_age_hours=0)
    assert model_table.versions(str(location)) == v


@pytest.mark.parametrize("text", ["{not json", '{"training_run_id": "a"}', '{"version": ""}', "[]", ""])
def test_prune_refuses_an_unreadable_pointer(tmp_path, text):
    location = tmp_path / "table"
    v = make_versions(location, [("20260101T000000-a", 900), ("20260102T000000-b", 800)])
    (location / "_CURRENT").write_text(text)
    for call in (lambda: model_table.prune(str(location), keep=0, min_age_hours=0),
                 lambda: model_table.current(str(location))):
        with pytest.raises(model_table.CorruptPointer, match=r"_CURRENT is unreadable.*found.*Fix: "):
            call()
    assert issubclass(model_table.CorruptPointer, InputError)
    assert model_table.versions(str(location)) == v  # nothing deleted


def test_prune_refuses_a_pointer_to_a_missing_version(tmp_path):
    location = tmp_path / "table"
    v = make_versions(location, [("20260101T000000-a", 900), ("20260102T000000-b", 800)])
    model_table.commit_version(str(location), str(v[0]), "a")
    shutil.rmtree(v[0])  # deleted by hand
    with pytest.raises(model_table.CorruptPointer, match="does not exist; nothing was deleted"):
        model_table.prune(str(location), keep=0, min_age_hours=0)
    assert model_table.versions(str(location)) == [v[1]]


def test_pointer_is_relative_and_records_the_registered_version(tmp_path):
    location = tmp_path / "table"
    v = make_versions(location, [("20260101T000000-a", 900)])
    model_table.commit_version(str(location), str(v[0]), "a", registered="models_name/3")
    stored = json.loads((location / "_CURRENT").read_text())
    assert stored["version"] == "_versions/20260101T000000-a" and stored["registered"] == "models_name/3"
    found = model_table.current(str(location))
    assert found["version"] == str(v[0].resolve()) and found["training_run_id"] == "a"
    assert found["registered"] == "models_name/3" and isinstance(found["committed_at"], float)
    model_table.commit_version(str(location), str(v[0]), "a")  # no registered version: None
    assert model_table.current(str(location))["registered"] is None


def test_a_copied_location_reads_and_prunes_its_own_versions(tmp_path):
    location = tmp_path / "table"
    v = make_versions(location, [("20260101T000000-a", 900), ("20260102T000000-b", 800), ("20260103T000000-c", 700)])
    model_table.commit_version(str(location), str(v[0]), "a")  # the oldest is current
    copy = tmp_path / "moved" / "table"
    shutil.copytree(location, copy)
    shutil.rmtree(location)  # moved, not copied: the old place is gone
    assert model_table.current(str(copy))["version"] == str((copy / "_versions" / v[0].name).resolve())
    deleted = model_table.prune(str(copy), keep=0, min_age_hours=0)
    assert sorted(Path(p).name for p in deleted) == [v[1].name, v[2].name]
    assert [p.name for p in model_table.versions(str(copy))] == [v[0].name]  # the live version survived


def test_a_pointer_written_by_an_older_version_still_reads(tmp_path):
    location = tmp_path / "table"
    v = make_versions(location, [("20260101T000000-a", 900), ("20260102T000000-b", 800)])
    (location / "_CURRENT").write_text(json.dumps({"version": str(v[0]), "training_run_id": "a",
                                                   "committed_at": 1.0}))  # absolute, no "registered"
    assert model_table.current(str(location)) == {"version": str(v[0]), "training_run_id": "a",
                                                  "committed_at": 1.0, "registered": None}
    assert model_table.prune(str(location), keep=0, min_age_hours=0) == [str(v[1])]


def test_table_format_setting(monkeypatch):
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    for name in ("MANYMODELS_DATABRICKS_CONNECT", "DATABRICKS_CLUSTER_ID", "DATABRICKS_SERVERLESS_COMPUTE_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(settings.TABLE_FORMAT_ENV, raising=False)
    assert settings.TABLE_FORMAT_ENV == "MANYMODELS_TABLE_FORMAT"
    assert model_table.table_format() == "parquet"
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    assert model_table.table_format() == "delta"
    monkeypatch.setenv(settings.TABLE_FORMAT_ENV, "Parquet")
    assert model_table.table_format() == "parquet"
    monkeypatch.setenv(settings.TABLE_FORMAT_ENV, "orc")
    with pytest.raises(InputError, match=r"MANYMODELS_TABLE_FORMAT='orc': expected one of delta, parquet\. Fix: "):
        model_table.table_format()


@pytest.mark.parametrize("kwargs, words", [({"keep": -1}, "keep=-1"), ({"min_age_hours": -2.0}, "min_age_hours=-2.0"),
                                           ({"min_age_hours": float("nan")}, "min_age_hours=nan")])
def test_prune_refuses_bad_settings_and_table_names(tmp_path, kwargs, words):
    location = tmp_path / "table"
    make_versions(location, [("20260101T000000-a", 900)])
    with pytest.raises(InputError, match=words):
        model_table.prune(str(location), **kwargs)
    with pytest.raises(InputError, match="main.sales.models is a table name, which needs a Spark session"):
        model_table.prune("main.sales.models")
    assert len(model_table.versions(str(location))) == 1  # nothing deleted


def test_prune_from_the_command_line(tmp_path, capsys):
    from manymodels.jobs.cli import main

    location = tmp_path / "table"
    v = make_versions(location, [("20260101T000000-a", 900), ("20260102T000000-b", 800)])
    model_table.commit_version(str(location), str(v[1]), "b")
    assert main(["prune", "--model_table", str(location), "--keep", "0"]) == 0
    out = capsys.readouterr().out
    assert "deleted 1 old version(s)" in out and str(v[0]) in out and "1 left" in out
    assert model_table.versions(str(location)) == [Path(v[1])]
