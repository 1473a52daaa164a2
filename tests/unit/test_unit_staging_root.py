"""One staging setting for model stores and search data (``storage.staging.staging_root``): an explicit folder,
else ``MANYMODELS_STAGING``, else a Volume folder on Databricks, else ``$MANYMODELS_HOME/staging``; and the
warning when that embedded default meets a Spark master other than local. No Spark."""
import logging
from pathlib import Path

import pytest

from manymodels.storage import staging


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("MANYMODELS_STAGING", "DATABRICKS_RUNTIME_VERSION", "MANYMODELS_CATALOG", "MANYMODELS_SCHEMA",
                 "MANYMODELS_VOLUME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MANYMODELS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(staging, "_WARNED", set())
    return tmp_path


def test_staging_root_order_explicit_then_setting_then_volume_then_home(clean_env, monkeypatch):
    home = clean_env / "home"
    assert staging.staging_root() == home / "staging"
    assert staging.models_folder() == home / "staging" / "models"
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    assert str(staging.staging_root()) == "/Volumes/main/manymodels/manymodels_data/_staging"
    monkeypatch.setenv("MANYMODELS_CATALOG", "cat")
    monkeypatch.setenv("MANYMODELS_SCHEMA", "sch")
    monkeypatch.setenv("MANYMODELS_VOLUME", "vol")
    assert str(staging.models_folder()) == "/Volumes/cat/sch/vol/_staging/models"
    monkeypatch.setenv("MANYMODELS_STAGING", "/Volumes/a/b/c/shared")
    assert staging.staging_root() == Path("/Volumes/a/b/c/shared")
    assert staging.staging_root(str(clean_env / "mine")) == clean_env / "mine"
    assert staging.models_folder(clean_env / "mine") == clean_env / "mine" / "models"


@pytest.mark.parametrize("master, warned", [("spark://10.0.0.5:7077", True), ("yarn", True), ("local[2]", False),
                                            ("local-cluster[2,1,1024]", False), (None, False)])
def test_the_embedded_default_with_a_remote_master_is_warned_about_once(clean_env, monkeypatch, caplog, master,
                                                                         warned):
    with caplog.at_level(logging.WARNING, logger="manymodels"):
        staging.staging_root(master=master)
        staging.staging_root(master=master)
    found = [r.getMessage() for r in caplog.records if "cannot read it" in r.getMessage()]
    assert len(found) == (1 if warned else 0), found
    if warned:
        assert master in found[0] and "pass staging_dir or set MANYMODELS_STAGING" in found[0]


def test_no_warning_when_the_folder_is_chosen(clean_env, monkeypatch, caplog):
    monkeypatch.setenv("MANYMODELS_STAGING", str(clean_env / "shared"))
    with caplog.at_level(logging.WARNING, logger="manymodels"):
        staging.staging_root(master="spark://10.0.0.5:7077")
        staging.staging_root(str(clean_env / "explicit"), master="spark://10.0.0.5:7077")
    assert not caplog.records


def test_no_session_no_master():
    from manymodels.spark.session import master_of

    class Connect:  # a Spark Connect session may not expose spark.master
        class conf:  # noqa: N801
            @staticmethod
            def get(key, default=None):
                raise RuntimeError("not available under Spark Connect")

    assert master_of(None) is None and master_of(Connect()) is None
