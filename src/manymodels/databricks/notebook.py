"""Notebook helpers: widgets on Databricks, defaults (or MM_<NAME> environment variables) elsewhere.

This lets every notebook run unchanged as a plain Python script. ``dbutils`` and ``display`` are
looked up in the notebook's namespace only on Databricks; nothing Databricks-specific is imported
at module level.
"""
from __future__ import annotations

import os

from manymodels.settings import on_databricks


def _notebook_global(name: str):
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return None if shell is None else shell.user_ns.get(name)


def _dbutils():
    if not on_databricks():
        return None
    found = _notebook_global("dbutils")
    if found is None:
        from databricks.sdk.runtime import dbutils as found  # only on Databricks: it blocks elsewhere
    return found


def widgets(defaults: dict[str, str]) -> dict[str, str]:
    """Declare one text widget per entry and return the current values (strings, like job parameters)."""
    dbutils = _dbutils()
    if dbutils is not None:
        for name, default in defaults.items():
            dbutils.widgets.text(name, str(default))
        return {name: dbutils.widgets.get(name) for name in defaults}
    return {name: os.environ.get(f"MM_{name.upper()}", str(default)) for name, default in defaults.items()}


def show(obj, rows: int = 20) -> None:
    """``display`` on Databricks, a plain-text rendering elsewhere."""
    display = _notebook_global("display") if on_databricks() else None
    if display is not None:
        display(obj)
        return
    if hasattr(obj, "toPandas") and hasattr(obj, "limit"):
        obj = obj.limit(rows).toPandas()
    if hasattr(obj, "to_string"):
        print(obj.head(rows).to_string(max_colwidth=60))
    else:
        print(obj)
