"""Pruning old model-table versions of a folder location (model_store.prune): no Spark.

The version folders are made by hand (one empty data file each) because prune only looks at names, times
and the committed pointer; a Spark test in test_spark_retrain.py prunes real versions and reads the table."""
import os
import time
from pathlib import Path

import pytest

from manymodels import model_store
from manymodels.validation import InputError

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
    model_store.commit_version(str(location), str(v[1]), "b")  # an older run is current (e.g. rolled back)
    deleted = model_store.prune(str(location), keep=2, min_age_hours=24)
    assert deleted == [str(v[0]), str(v[2])]  # a and c: old, not current, not among the newest 2 (d, e)
    assert model_store.versions(str(location)) == [v[1], v[3], v[4]]
    assert model_store.current(str(location))["version"] == str(v[1])
    assert model_store.prune(str(location), keep=0, min_age_hours=24) == [str(v[3])]  # e is younger than a day
    assert model_store.prune(str(location), keep=0, min_age_hours=0) == [str(v[4])]  # only the current one left
    assert model_store.versions(str(location)) == [v[1]]


def test_prune_of_a_location_never_committed_or_empty(tmp_path):
    location = tmp_path / "table"
    assert model_store.prune(str(location)) == [] and model_store.versions(str(location)) == []
    v = make_versions(location, [("20260101T000000-killed", 100), ("20260102T000000-killed", 50)])
    assert model_store.prune(str(location), keep=1, min_age_hours=1) == [str(v[0])]  # orphans of killed runs go too


@pytest.mark.parametrize("kwargs, words", [({"keep": -1}, "keep=-1"), ({"min_age_hours": -2.0}, "min_age_hours=-2.0"),
                                           ({"min_age_hours": float("nan")}, "min_age_hours=nan")])
def test_prune_refuses_bad_settings_and_table_names(tmp_path, kwargs, words):
    location = tmp_path / "table"
    make_versions(location, [("20260101T000000-a", 900)])
    with pytest.raises(InputError, match=words):
        model_store.prune(str(location), **kwargs)
    with pytest.raises(InputError, match="VACUUM main.sales.models"):
        model_store.prune("main.sales.models")
    assert len(model_store.versions(str(location))) == 1  # nothing deleted


def test_prune_from_the_command_line(tmp_path, capsys):
    from manymodels.cli import main

    location = tmp_path / "table"
    v = make_versions(location, [("20260101T000000-a", 900), ("20260102T000000-b", 800)])
    model_store.commit_version(str(location), str(v[1]), "b")
    assert main(["prune", "--model_table", str(location), "--keep", "0"]) == 0
    out = capsys.readouterr().out
    assert "deleted 1 old version(s)" in out and str(v[0]) in out and "1 left" in out
    assert model_store.versions(str(location)) == [Path(v[1])]
