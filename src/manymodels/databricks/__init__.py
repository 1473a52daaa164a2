"""Databricks only: the workspace helper on databricks-sdk (``workspace``) and the notebook helpers (``notebook``).
Nothing here is needed locally; each import of a Databricks library happens in the function that uses it."""
