"""Values and tag keys quoted for MLflow's search filter strings (``search_runs``, ``search_model_versions``).

Pure: no MLflow import. How MLflow (3.x, ``mlflow/utils/search_utils.py``) reads a filter: ``sqlparse``
splits it into tokens, then a string value is the token with its first and last character cut off
(``_strip_quotes``). Nothing is unescaped, so:

- ``'...'`` and ``"..."`` are both string values; ``\\'`` and ``''`` are *not* escapes: they stay in the
  value as two characters and the search looks for a different string.
- sqlparse itself does treat ``\\'`` (``\\"``) as an escaped quote when it looks for the end of a string,
  so a value ending in a backslash swallows its closing quote once another quote follows in the filter.
- Tag keys are backtick-quoted (```key```) or double-quoted; backticks are cut off the same way.

So a value is written in single quotes when it holds no ``'``, else in double quotes when it holds no
``"``; a value holding both, or ending in a backslash, has no spelling in the grammar and is refused with
``FilterValueError`` naming it. ``IN (...)`` lists are parsed differently (``ast.literal_eval``): do not
build them from these literals.
"""
from __future__ import annotations

from manymodels.errors import InputError


class FilterValueError(InputError):
    """A name, id or tag that MLflow's search filter grammar cannot express; the message names it and the fix."""


def _refuse(value: str, what: str, why: str) -> FilterValueError:
    return FilterValueError(
        f"{what} {value!r} {why}: MLflow's search filter grammar has no escape for it (a quoted string ends at "
        "its closing quote and neither \\' nor '' is unescaped), so runs or versions carrying it cannot be "
        f"searched for. Fix: choose a {what} without it (letters, digits, '_', '-', '.', spaces and one kind of "
        "quote are fine).")


def literal(value: str, what: str = "value") -> str:
    """``value`` as a quoted string of MLflow's filter grammar: ``'value'``, or ``"value"`` when it holds a ``'``.

    ``what`` names the value in the error (e.g. ``"model name"``, ``"training_run_id"``). Raises
    ``FilterValueError`` for a value holding both ``'`` and ``"``, or ending in a backslash."""
    if not isinstance(value, str):
        raise FilterValueError(f"{what} {value!r} is a {type(value).__name__}: expected a string.")
    if value.endswith("\\"):
        raise _refuse(value, what, "ends in a backslash")
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise _refuse(value, what, "holds both a single and a double quote")


def tag_key(name: str, what: str = "tag key") -> str:
    """``tags.`name``` (or ``tags."name"`` when the key holds a backtick), for any key of a run or model version."""
    if not isinstance(name, str) or not name:
        raise FilterValueError(f"{what} {name!r}: expected a non-empty string.")
    if "`" not in name:
        return f"tags.`{name}`"
    if '"' not in name and not name.endswith("\\"):
        return f'tags."{name}"'
    raise _refuse(name, what, "holds a backtick and a double quote (or ends in a backslash)")


def equals(identifier: str, value: str, what: str | None = None) -> str:
    """``<identifier> = <literal(value)>``; ``identifier``: an attribute (``name``, ``run_id``) or ``tag_key(...)``."""
    return f"{identifier} = {literal(value, what or identifier)}"


def tag_equals(key: str, value: str, what: str | None = None) -> str:
    """``tags.`key` = <literal(value)>``."""
    return equals(tag_key(key), value, what or f"tag {key!r}")
