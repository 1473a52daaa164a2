"""Notebook helpers: widgets on Databricks, defaults (or MM_<NAME> environment variables) elsewhere.

This lets every notebook run unchanged as a plain Python script. ``dbutils`` and ``display`` are
looked up in the notebook's namespace only on Databricks; nothing Databricks-specific is imported
at module level.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

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


def widgets(params) -> dict[str, str]:
    """Declare one widget per parameter and return the current values (strings, as job parameters are).

    ``params``: objects with ``name``, ``text`` (the default as text), ``type`` and ``choices`` (enumerated values),
    such as ``manymodels.jobs.params.job_params("score")``; or a mapping name -> default (text widgets). Enumerated
    and boolean parameters are dropdowns, the others text boxes; each has a label (its name in words). A job run
    sets the values from its job parameters (pushed down to every notebook task under the same names). Outside
    Databricks the values are the environment variables ``MM_<NAME>`` where set, else the defaults."""
    declared = _declared(params)
    dbutils = _dbutils()
    if dbutils is not None:
        for name, default, choices in declared:
            if choices:
                dbutils.widgets.dropdown(name, default, list(choices), label(name))
            else:
                dbutils.widgets.text(name, default, label(name))
        return {name: dbutils.widgets.get(name) for name, _, _ in declared}
    return {name: os.environ.get(f"MM_{name.upper()}", default) for name, default, _ in declared}


def label(name: str) -> str:
    """A widget's label: its name in words (``model_cache_mb`` -> ``Model cache MB``)."""
    words = name.split("_")
    shown = [w.upper() if w in _ABBREVIATIONS else w for w in words]
    return " ".join(shown)[:1].upper() + " ".join(shown)[1:]


_ABBREVIATIONS = {"mb", "cv", "id", "uc"}


def _declared(params) -> list[tuple[str, str, tuple[str, ...]]]:
    """(name, default text, choices) per widget: a boolean's choices are true and false; a dropdown's default is
    one of its choices (an empty default of an enumerated parameter stays a text box)."""
    if isinstance(params, Mapping):
        return [(name, str(default), ()) for name, default in params.items()]
    out = []
    for p in params:
        choices = tuple(p.choices) or (("true", "false") if p.type == "bool" else ())
        out.append((p.name, p.text, choices if p.text in choices else ()))
    return out


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
