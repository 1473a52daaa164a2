"""Table-name locations of model_store on real local Spark: Parquet tables in the in-memory catalog.

A table-name location is a view over immutable version tables; a commit moves the view. Checked here:
a written but uncommitted version changes nothing readers see (``spark.read.table`` and ``model_table.read``),
a commit swaps, ``current()`` reports version / run / registered version, a plain table left by an older
manymodels is migrated on the first commit, and pruning drops old version tables but never the one the view
reads (nor another location's).

NOT exercised here: Delta itself (its jars cannot be fetched on these machines; ``MANYMODELS_TABLE_FORMAT``
picks Delta on Databricks and the code path is the same), Unity Catalog and the Hive metastore (their
atomicity and grants are documented in model_store, not tested), Spark Connect, and readers racing a commit
from another process. Nor a job overwriting a table it also reads: the code never does that, since every
version is a new table.
"""
import time
import uuid

import pandas as pd
import pytest

from manymodels import settings
from manymodels.errors import InputError
from manymodels.storage import model_table

HOUR = 3600.0


@pytest.fixture
def schema(spark, tmp_path, monkeypatch):
    """A fresh schema whose tables live under tmp_path; version tables in Parquet."""
    monkeypatch.setenv(settings.TABLE_FORMAT_ENV, "parquet")
    name = f"mm_{uuid.uuid4().hex[:10]}"
    spark.sql(f"CREATE SCHEMA {name} LOCATION '{tmp_path / 'warehouse'}'")
    yield name
    spark.sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def rows(spark, run: str, groups=("a", "b")):
    return spark.createDataFrame(pd.DataFrame({"group": list(groups), "training_run_id": run, "status": "ok"}))


def seen(df) -> list[tuple]:
    return sorted(tuple(r) for r in df.select("group", "training_run_id").collect())


def props(spark, location: str) -> dict:
    return {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {location}").collect()}


def test_a_written_version_is_invisible_until_committed(spark, schema):
    location = f"spark_catalog.{schema}.models"  # three parts: the session catalog renames with two
    first = model_table.write(rows(spark, "run-a"), location, "run-a")
    assert first.startswith(f"spark_catalog.{schema}.models__mm_v") and model_table.is_table_name(first)
    assert spark.catalog.getTable(location).tableType == "VIEW"
    second = model_table.write(rows(spark, "run-b", ("a", "b", "c")), location, "run-b", commit=False)
    # Readers of the location still see the first version, through Spark and through model_store.
    assert seen(spark.read.table(location)) == [("a", "run-a"), ("b", "run-a")]
    assert seen(model_table.read(spark, location)) == [("a", "run-a"), ("b", "run-a")]
    assert model_table.current(location, spark)["version"] == first
    assert len(seen(model_table.read_version(spark, second))) == 3  # the new version is complete and readable
    assert model_table.versions(location, spark=spark) == [first, second]


def test_commit_swaps_the_view_and_records_run_and_registered_version(spark, schema):
    location = f"{schema}.models"
    first = model_table.write(rows(spark, "run-a"), location, "run-a")
    second = model_table.write(rows(spark, "run-b", ("c",)), location, "run-b", commit=False)
    before = time.time()
    model_table.commit_version(location, second, "run-b", spark=spark, registered="models_name/3")
    assert seen(spark.read.table(location)) == [("c", "run-b")]
    assert seen(model_table.read(spark, location)) == [("c", "run-b")]
    found = model_table.current(location, spark)
    assert found["version"] == second and found["training_run_id"] == "run-b"
    assert found["registered"] == "models_name/3" and found["committed_at"] >= before
    assert props(spark, location)["manymodels.version"] == second  # visible to anyone browsing the catalog
    model_table.commit_version(location, first, "run-a", spark=spark)  # a rollback: the view moves back
    assert seen(spark.read.table(location)) == [("a", "run-a"), ("b", "run-a")]
    assert model_table.current(location, spark)["registered"] is None
    with pytest.raises(InputError, match="needs a Spark session"):
        model_table.commit_version(location, second, "run-b")
    with pytest.raises(InputError, match="cannot hold a quote"):
        model_table.commit_version(location, second, "it's", spark=spark)
    with pytest.raises(InputError, match="cannot hold a quote"):
        model_table.write(rows(spark, "x"), location, "it's", commit=False)  # refused before writing
    assert model_table.versions(location, spark=spark) == [first, second]
    with pytest.raises(InputError, match="is not a version table of"):
        model_table.commit_version(location, f"{schema}.other", "run-b", spark=spark)
    assert model_table.current(location, spark)["version"] == first  # refused before anything moved


def test_a_plain_table_of_an_older_version_is_migrated_on_first_commit(spark, schema):
    location = f"{schema}.models"
    rows(spark, "old").write.format("parquet").saveAsTable(location)  # what one overwrite used to leave
    assert model_table.current(location, spark) == {"version": location, "training_run_id": None,
                                                    "committed_at": None, "registered": None}
    new = model_table.write(rows(spark, "new", ("z",)), location, "new", commit=False)
    assert seen(spark.read.table(location)) == [("a", "old"), ("b", "old")]  # not committed: unchanged
    model_table.commit_version(location, new, "new", spark=spark)
    assert spark.catalog.getTable(location).tableType == "VIEW"
    assert seen(model_table.read(spark, location)) == [("z", "new")]
    kept = model_table.versions(location, spark=spark)
    assert len(kept) == 2 and new in kept  # the old rows live on as a version table
    (old,) = [v for v in kept if v != new]
    assert seen(model_table.read_version(spark, old)) == [("a", "old"), ("b", "old")]


def test_prune_drops_old_version_tables_but_never_the_current_one(spark, schema):
    location, other = f"{schema}.models", f"{schema}.models_x"
    v1 = model_table.write(rows(spark, "r1"), location, "r1")
    v2 = model_table.write(rows(spark, "r2"), location, "r2")
    v3 = model_table.write(rows(spark, "r3"), location, "r3", commit=False)  # a run killed before its commit
    x1 = model_table.write(rows(spark, "x1"), other, "x1", commit=False)  # another location in the schema
    model_table.commit_version(location, v1, "r1", spark=spark)  # rolled back: the oldest is current
    assert model_table.prune(location, keep=0, min_age_hours=24, spark=spark) == []  # all younger than a day
    later = time.time() + 48 * HOUR
    assert model_table.prune(location, keep=1, min_age_hours=24, now=later, spark=spark) == [v2]  # v3 newest
    assert model_table.versions(location, spark=spark) == [v1, v3]
    assert model_table.prune(location, keep=0, min_age_hours=0, spark=spark) == [v3]
    assert model_table.versions(location, spark=spark) == [v1]
    assert seen(spark.read.table(location)) == [("a", "r1"), ("b", "r1")]
    assert model_table.versions(other, spark=spark) == [x1]  # untouched
    # A commit killed between moving the view and writing the view's properties: current() follows what
    # readers read (with the run and registered version the version table carries), and prune keeps both.
    v4 = model_table.write(rows(spark, "r4"), location, "r4", commit=False)
    with pytest.raises(RuntimeError, match="killed"):
        model_table.commit_version(location, v4, "r4", spark=KilledBeforeViewProperties(spark), registered="m/4")
    assert seen(spark.read.table(location)) == [("a", "r4"), ("b", "r4")]
    assert props(spark, location)["manymodels.version"] == v1  # stale
    found = model_table.current(location, spark)
    assert (found["version"], found["training_run_id"], found["registered"]) == (v4, "r4", "m/4")
    assert model_table.prune(location, keep=0, min_age_hours=0, spark=spark) == []
    assert model_table.versions(location, spark=spark) == [v1, v4]
    model_table.commit_version(location, v4, "r4", spark=spark, registered="m/4")  # a rerun repairs it
    assert props(spark, location)["manymodels.version"] == v4
    assert model_table.prune(location, keep=0, min_age_hours=0, spark=spark) == [v1]


class KilledBeforeViewProperties:
    """A session whose process dies right after the view moved, before the view's properties are written."""

    def __init__(self, spark):
        self._spark, self.catalog = spark, spark.catalog

    def sql(self, text: str):
        if text.startswith("ALTER VIEW") and "SET TBLPROPERTIES" in text:
            raise RuntimeError("killed")
        return self._spark.sql(text)


def test_prune_refuses_version_tables_without_a_view(spark, schema):
    location = f"{schema}.models"
    assert model_table.prune(location, keep=0, min_age_hours=0, spark=spark) == []  # nothing there
    with pytest.raises(model_table.ModelTableNotFound):
        model_table.current(location, spark)
    v1 = model_table.write(rows(spark, "r1"), location, "r1", commit=False)
    with pytest.raises(model_table.PruneRefused, match="is not a manymodels view.*nothing was deleted"):
        model_table.prune(location, keep=0, min_age_hours=0, spark=spark)
    assert model_table.versions(location, spark=spark) == [v1]
    with pytest.raises(InputError, match="needs a Spark session"):
        model_table.prune(location, keep=0, min_age_hours=0)
