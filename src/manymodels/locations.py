"""Where the jobs' things are, from the catalog, schema and volume a notebook or job is given: the registered model
names (three levels in Unity Catalog), the default input and panel folders, and the staging folder executors read.

On Databricks everything lives in the schema's volume (``/Volumes/<catalog>/<schema>/<volume>/...``), which every
executor of every compute type can read; locally it lives under ``$MANYMODELS_HOME``. One place decides it, so the
notebooks, the command line, the studies and the bundle's jobs agree. Pure: no Spark, no MLflow (a base layer, beside
``settings``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from manymodels.errors import InputError
from manymodels.settings import DEFAULT_VOLUME, on_databricks, project_home, volume_path

PANEL_FOLDER = "panel"  # the volume folder `manymodels prepare` writes and `workspace upload` fills
STAGING_FOLDER = "_staging"  # the volume folder of staged model stores and search data


def compose_name(name: str, catalog: str | None, schema: str | None) -> str:
    """``catalog.schema.name`` when both are set and ``name`` has one level; ``name`` as it is otherwise."""
    return f"{catalog}.{schema}.{name}" if catalog and schema and "." not in name else name


@dataclass(frozen=True)
class Locations:
    """A notebook's or job's ``catalog``, ``schema`` and ``volume`` (empty: not set)."""

    catalog: str = ""
    schema: str = ""
    volume: str = ""

    @classmethod
    def of(cls, values) -> Locations:
        """From parsed widget values (a mapping with ``catalog``, ``schema`` and maybe ``volume``)."""
        return cls(values.get("catalog") or "", values.get("schema") or "", values.get("volume") or "")

    @property
    def in_volume(self) -> bool:
        """On Databricks with a catalog and schema: folders are in the volume."""
        return on_databricks() and bool(self.catalog and self.schema)

    def model_name(self, name: str) -> str:
        """``catalog.schema.name`` when catalog and schema are set and ``name`` has one level; ``name`` otherwise.
        On Databricks a one-level name is refused: Unity Catalog names a model by three levels
        (https://docs.databricks.com/en/machine-learning/manage-model-lifecycle/index.html)."""
        name = compose_name(name.strip(), self.catalog, self.schema)
        if on_databricks() and name.count(".") != 2:
            raise InputError(f"model_name={name!r}: Unity Catalog needs a three-level name catalog.schema.model. "
                             "Fix: set the catalog and schema widgets (or job parameters), or pass "
                             "model_name=<catalog>.<schema>.<name>.")
        return name

    def folder(self, *parts: str) -> str:
        """A folder in the volume on Databricks, else under ``$MANYMODELS_HOME``."""
        if self.in_volume:
            return volume_path(self.catalog, self.schema, self.volume or DEFAULT_VOLUME, *parts)
        return str(Path(project_home(), *parts))

    def panel_dir(self, output_dir: str | None = None) -> str:
        """Where ``manymodels prepare`` writes: ``output_dir``, else the volume's (or the project's) panel folder."""
        if output_dir:
            return output_dir
        return self.folder(PANEL_FOLDER) if self.in_volume else str(project_home() / "data" / PANEL_FOLDER)

    def default_input(self) -> str:
        """The input when none is given: the Parquet panel ``manymodels prepare`` writes; an ``InputError`` naming
        the folder and the fix when it is not there (checked only where the folder can be looked at)."""
        path = Path(self.panel_dir(), "parquet")
        if not path.exists() and (not str(path).startswith("/Volumes/") or Path("/Volumes").is_dir()):
            raise InputError(f"No input at {path}: run notebooks/01_prepare_data.py (or `manymodels prepare`) "
                             "first, or pass input_path (a table name, or a folder in a volume).")
        return str(path)

    def staging_dir(self, staging_dir: str | None = None) -> str | None:
        """The folder executors read staged model stores and search data from: ``staging_dir``; else on Databricks
        the volume's ``_staging`` folder (never the driver's working directory or ``/dbfs/tmp``); else None, which
        leaves it to ``storage.staging.staging_root`` (``$MANYMODELS_STAGING``, then ``$MANYMODELS_HOME``)."""
        if staging_dir:
            return staging_dir
        return self.folder(STAGING_FOLDER) if self.in_volume else None
