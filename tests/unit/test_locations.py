"""Where the jobs' things are (jobs/locations.py): locally under $MANYMODELS_HOME with one-level model names, on
Databricks in the schema's volume with three-level names (tests/unit/test_bundle_rules.py has the Databricks side)."""
from __future__ import annotations

import pytest

from manymodels.errors import InputError
from manymodels.locations import Locations


@pytest.fixture(autouse=True)
def local(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    monkeypatch.setenv("MANYMODELS_HOME", str(tmp_path))
    return tmp_path


def test_locally_the_project_folder_and_one_level_names(local):
    where = Locations()
    assert not where.in_volume
    assert where.model_name(" router ") == "router"
    assert where.panel_dir() == str(local / "data" / "panel")
    assert where.panel_dir("/elsewhere") == "/elsewhere"
    assert where.staging_dir() is None  # storage.staging decides: $MANYMODELS_STAGING, then $MANYMODELS_HOME
    assert where.staging_dir("/shared/staging") == "/shared/staging"


def test_a_catalog_and_schema_give_three_level_names_everywhere(local):
    where = Locations("main", "mm")
    assert where.model_name("router") == "main.mm.router"
    assert where.model_name("other.schema.router") == "other.schema.router"  # a full name is kept
    assert not where.in_volume  # locally the folders stay under the project


def test_no_input_names_the_folder_and_the_fix(local):
    with pytest.raises(InputError, match=r"No input at .*data/panel/parquet.*01_prepare_data"):
        Locations().default_input()
    (local / "data" / "panel" / "parquet").mkdir(parents=True)
    assert Locations().default_input() == str(local / "data" / "panel" / "parquet")


def test_of_reads_widget_values():
    assert Locations.of({"catalog": "c", "schema": None, "other": 1}) == Locations("c", "", "")
