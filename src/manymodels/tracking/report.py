"""What a training run shows a person browsing the registry: the registered version's description (Markdown), the
worst-groups table, two figures, and the input dataset ``mlflow.log_input`` records. Driver only.

Everything here is computed from the per-group metrics ``runs.log_training`` already collected (keys, status, error,
row counts, metrics; no blobs) with vectorized pandas, so its cost and the number of files it makes do not grow with
the number of groups beyond those columns: the scatter is drawn from a fixed-size sample, the table has ``N`` rows.

The version description has two parts that two writers own: the training part (``training_description``, written by
``log_training``) and the promotion gate's section (``GATE_HEADING``, written by ``tracking.promotion``).
``compose_description`` replaces one part and keeps the other, so neither writer clobbers the other's text.
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pandas as pd

from manymodels.core.keys import canonical_key
from manymodels.core.promotion import DEFAULT_METRICS, LOWER, metric_direction
from manymodels.core.schema import METRIC_COLUMNS, STATUS_FAILED, STATUS_OK, STATUS_SKIPPED

TRAINING_HEADING = "## Training run"
GATE_HEADING = "## Promotion gate"
LEGACY_GATE_PREFIX = "manymodels quality gate against"  # what promotion wrote before the sections existed
MAX_DESCRIPTION = 5000  # the local registry's column (String(5000)); Unity Catalog allows more
MAX_TRAINING_PART = 3500  # the rest is left to the gate section
WORST_GROUPS = 50
WORST_FAILED = 10  # of the worst-groups rows, at most this many are failed groups (no metric); the rest ranked
SCATTER_POINTS = 20_000
RANKING_METRICS = (*DEFAULT_METRICS, "train_rmse", "train_accuracy")  # holdout first, as the promotion gate
WORST_TABLE = "worst_groups.json"  # mlflow.log_table artifacts
FIGURES = ("figures/metric_vs_group_rows.png", "figures/failure_reasons.png")


# ------------------------------------------------------------------------------------------ the version description


def split_description(text: str | None) -> tuple[str, str]:
    """``(training part, gate part)`` of a version description; text before any gate section is the training part."""
    text = text or ""
    starts = [m.start() for m in re.finditer(rf"^(?:{re.escape(GATE_HEADING)}|{re.escape(LEGACY_GATE_PREFIX)})",
                                             text, flags=re.MULTILINE)]
    if not starts:
        return text.strip(), ""
    return text[:starts[0]].strip(), text[starts[0]:].strip()


def compose_description(current: str | None, *, training: str | None = None, gate: str | None = None) -> str:
    """``current`` with its training part replaced by ``training`` and/or its gate part by ``gate`` (None: kept),
    the training part first; cut to ``MAX_DESCRIPTION`` characters by shortening the training part."""
    old_training, old_gate = split_description(current)
    training = (old_training if training is None else training).strip()
    gate = (old_gate if gate is None else gate).strip()
    room = MAX_DESCRIPTION - len(gate) - 2
    if len(training) > room:
        training = training[:max(room - 20, 0)].rstrip() + "\n\n(cut to fit)"
    return "\n\n".join(p for p in (training, gate) if p)[:MAX_DESCRIPTION]


def gate_section(text: str) -> str:
    """The promotion gate's section of a version description (``tracking.promotion.record_verdict``)."""
    return f"{GATE_HEADING}\n\n{text.strip()}"


def training_description(*, training_run_id: str, run_id: str, metrics: pd.DataFrame, estimator, spec_lines: list[str],
                         source: str | None, source_version: str | None, fingerprint: str,
                         model_table: str) -> str:
    """The training part of the registered version's description: groups, metric quantiles, the estimator and its
    parameters (a Pipeline's steps too), the data and the runs; plain Markdown, at most ``MAX_TRAINING_PART``."""
    status = metrics["status"] if len(metrics) else pd.Series([], dtype="object")
    counts = {s: int((status == s).sum()) for s in (STATUS_OK, STATUS_FAILED, STATUS_SKIPPED)}
    lines = [f"{TRAINING_HEADING} `{training_run_id}`", "",
             f"MLflow run `{run_id}`; model table `{model_table}`.", "",
             "### Groups", "", "| ok | failed | skipped | total |", "|---:|---:|---:|---:|",
             f"| {counts[STATUS_OK]:,} | {counts[STATUS_FAILED]:,} | {counts[STATUS_SKIPPED]:,} | {len(metrics):,} |"]
    quantiles = metric_quantiles(metrics)
    if len(quantiles):
        lines += ["", "### Metrics of the ok groups", "", "| metric | p10 | p50 | p90 |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {row.p10:.4g} | {row.p50:.4g} | {row.p90:.4g} |" for name, row in quantiles.iterrows()]
    rows = int(pd.to_numeric(metrics.get("n_rows", pd.Series([], dtype=float)), errors="coerce").fillna(0).sum())
    where = f"`{source}`" if source else "not recorded"
    if source and source_version is not None:
        where += f" (Delta version {source_version})"
    lines += ["", "### Data", "", f"- source: {where}", f"- rows: {rows:,} in {len(metrics):,} groups",
              f"- run fingerprint: `{fingerprint}`", *spec_lines]
    head = "\n".join(lines)
    estimator_part = "\n".join(["", "", "### Estimator", "", *estimator_lines(estimator)])
    room = MAX_TRAINING_PART - len(head)
    if len(estimator_part) > room:  # the estimator's parameters are the part that can be long
        estimator_part = estimator_part[:max(room - 40, 0)].rstrip() + "\n- ... (cut; see the run's params)"
    return head + estimator_part


def metric_quantiles(metrics: pd.DataFrame, columns=None) -> pd.DataFrame:
    """p10/p50/p90 of each holdout metric (train metrics when no holdout was kept) over the ok groups."""
    ok = metrics[metrics["status"] == STATUS_OK] if len(metrics) else metrics
    wanted = columns or [c for c in METRIC_COLUMNS if c.startswith("holdout_")]
    found = [c for c in wanted if c in ok and ok[c].notna().any()]
    if not found and columns is None:
        found = [c for c in METRIC_COLUMNS if c.startswith("train_") and c in ok and ok[c].notna().any()]
    if not found:
        return pd.DataFrame(columns=["p10", "p50", "p90"])
    q = ok[found].astype("float64").quantile([0.1, 0.5, 0.9]).T
    q.columns = ["p10", "p50", "p90"]
    return q


def estimator_lines(estimator, depth: int = 0, name: str | None = None) -> list[str]:
    """Markdown list lines: the estimator's class and the parameters it sets away from their defaults; the steps
    of a Pipeline (any ``(name, estimator, ...)`` list, e.g. a ColumnTransformer's) and nested estimators below."""
    indent = "  " * depth
    label = f"`{name}`: " if name else ""
    kind = type(estimator)
    lines = [f"{indent}- {label}`{kind.__name__}` ({kind.__module__.split('.')[0]})"]
    if not hasattr(estimator, "get_params") or depth > 3:
        return lines
    nested, plain = [], []
    for key, value in changed_params(estimator).items():
        if hasattr(value, "get_params") and not isinstance(value, type):
            nested.append((key, value))
        elif isinstance(value, (list, tuple)) and value and all(
                isinstance(v, tuple) and len(v) >= 2 and hasattr(v[1], "get_params") for v in value):
            nested += [(f"{key}.{v[0]}", v[1]) for v in value]
        else:
            plain.append(f"{key}={_short(value)}")
    if plain:
        lines.append(f"{indent}  - params: {', '.join(plain)}")
    for key, value in nested:
        lines += estimator_lines(value, depth + 1, key)
    return lines


def changed_params(estimator) -> dict:
    """``get_params(deep=False)`` without the ones left at their ``__init__`` default (as sklearn's repr shows)."""
    try:
        defaults = {p.name: p.default for p in inspect.signature(type(estimator).__init__).parameters.values()}
    except (TypeError, ValueError):
        defaults = {}
    out = {}
    for key, value in estimator.get_params(deep=False).items():
        default = defaults.get(key, inspect.Parameter.empty)
        if default is inspect.Parameter.empty or repr(default) != repr(value):
            out[key] = value
    return out


def _short(value, limit: int = 80) -> str:
    text = repr(value) if not callable(value) else getattr(value, "__name__", type(value).__name__)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ------------------------------------------------------------------------------------ worst groups and failure reasons


def ranking_metric(metrics: pd.DataFrame) -> str | None:
    """The metric groups are ranked by: the promotion gate's default (holdout_rmse, else holdout_accuracy), else
    the train metric of the same kind; None when no ok group has any."""
    ok = metrics[metrics["status"] == STATUS_OK] if len(metrics) else metrics
    return next((c for c in RANKING_METRICS if c in ok and ok[c].notna().any()), None)


def worst_groups(metrics: pd.DataFrame, keys, n: int = WORST_GROUPS, failed: int = WORST_FAILED) -> pd.DataFrame:
    """Up to ``n`` groups, worst first: up to ``failed`` failed groups (the largest first: they have no model and no
    metric), then the ok groups with the worst ``ranking_metric``. Columns: the keys, ``n_rows``, ``metric`` (its
    name), ``value``, ``status``, ``error`` (its first line). O(groups) with ``nsmallest``/``nlargest``."""
    keys = list(keys)
    columns = [*keys, "n_rows", "metric", "value", "status", "error"]
    if not len(metrics):
        return pd.DataFrame(columns=columns)
    column = ranking_metric(metrics)
    bad = metrics[metrics["status"] == STATUS_FAILED]
    bad = bad.nlargest(min(failed, n), "n_rows") if len(bad) else bad
    ok = metrics[(metrics["status"] == STATUS_OK)]
    if column is not None:
        ok = ok[ok[column].notna()]
        pick = ok.nlargest if metric_direction(column) == LOWER else ok.nsmallest
        ok = pick(n - len(bad), column)
    else:
        ok = ok.iloc[:0]
    out = pd.concat([bad, ok], ignore_index=True)
    return pd.DataFrame({**{k: key_values(out[k]) for k in keys}, "n_rows": out["n_rows"], "metric": column or "",
                         "value": out[column] if column else np.nan, "status": out["status"],
                         "error": first_line(out["error"])}, columns=columns)


def key_values(values: pd.Series) -> pd.Series:
    """A key column as the table shows it: numbers and text as they are, other values (bytes, dates, decimals) as
    the router's canonical text of the key (``keys.canonical_key``), which JSON can hold."""
    if values.dtype.kind in "biuf":
        return values
    return values.map(lambda v: v if v is None or isinstance(v, str) else canonical_key((v,))[0]).astype(object)


def first_line(errors: pd.Series, limit: int = 300) -> pd.Series:
    text = errors.astype("string").str.strip()
    return text.str.split("\n", n=1).str[0].str.slice(0, limit).astype(object).where(text.notna(), None)


def failure_reasons(metrics: pd.DataFrame) -> pd.Series:
    """Groups per failure reason, most frequent first: ``failed: <exception class>`` (the name the error starts
    with) and ``skipped: <why>``; ok groups are not counted. Vectorized over the groups' error text."""
    if not len(metrics):
        return pd.Series([], dtype="int64")
    rest = metrics[metrics["status"] != STATUS_OK]
    if not len(rest):
        return pd.Series([], dtype="int64")
    error = rest["error"].astype("string").fillna("")
    exception = error.str.extract(r"^\s*([A-Za-z_][\w.]*)", expand=False).fillna("unknown")
    skipped = np.select([error.str.contains("are null", regex=False), error.str.contains("min_rows", regex=False)],
                        ["all labels null", "fewer rows than min_rows"], "other")
    reason = np.where(rest["status"] == STATUS_SKIPPED, "skipped: " + pd.Series(skipped, index=rest.index),
                      rest["status"].astype(str) + ": " + exception)
    return pd.Series(reason, index=rest.index).value_counts()


# ------------------------------------------------------------------------------------------------------------ figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metric_vs_rows_figure(metrics: pd.DataFrame, max_points: int = SCATTER_POINTS, seed: int = 0):
    """Scatter of the ranking metric against the group's row count (log scale), ok groups; a fixed-size random
    sample above ``max_points`` groups, so drawing costs the same at 200k groups as at 20k."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    column = ranking_metric(metrics)
    ok = metrics[(metrics["status"] == STATUS_OK)] if len(metrics) else metrics
    ok = ok[np.isfinite(ok[column].to_numpy(dtype="float64"))] if column else ok.iloc[:0]
    shown = ok.sample(max_points, random_state=seed) if len(ok) > max_points else ok
    if len(shown):
        ax.scatter(shown["n_rows"].to_numpy(dtype="float64"), shown[column].to_numpy(dtype="float64"), s=6,
                   alpha=0.4, linewidths=0)
        ax.set_xscale("log")
        ax.set_xlabel("rows in the group")
        ax.set_ylabel(column)
        sampled = f" (a sample of {len(shown):,})" if len(shown) < len(ok) else ""
        ax.set_title(f"{column} by group size: {len(ok):,} ok groups{sampled}", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no ok group has a metric", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.13, top=0.9)  # fixed margins: tight_layout costs more
    return fig


def failure_figure(reasons: pd.Series, top: int = 15):
    """Bar chart of the failure reasons (``failure_reasons``), the ``top`` most frequent and the rest summed; a
    run without failures gets a figure saying so."""
    plt = _pyplot()
    if len(reasons) > top:
        reasons = pd.concat([reasons.iloc[:top], pd.Series({f"{len(reasons) - top} other reasons":
                                                            int(reasons.iloc[top:].sum())})])
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.35 * max(len(reasons), 1)))
    if len(reasons):
        labels = [r if len(r) <= 60 else r[:57] + "..." for r in reasons.index]
        ax.barh(labels[::-1], reasons.to_numpy()[::-1])
        ax.set_xlabel("groups")
        ax.set_title(f"groups without a model: {int(reasons.sum()):,}", fontsize=10)
    else:
        ax.text(0.5, 0.5, "no failed or skipped groups", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.45, right=0.97, bottom=0.5 / height, top=1 - 0.4 / height)
    return fig


def log_report(metrics: pd.DataFrame, keys, *, run_id: str, rerun: bool) -> None:
    """Log the worst-groups table and the two figures to the active run: three files whatever the number of
    groups. ``mlflow.log_table`` appends to an existing file, so a rerun of the same training run (same
    fingerprint, same groups) keeps the table it already logged instead of doubling it; the figures are replaced."""
    import mlflow
    from mlflow import MlflowClient

    if not (rerun and any(a.path == WORST_TABLE for a in MlflowClient().list_artifacts(run_id))):
        mlflow.log_table(worst_groups(metrics, keys), WORST_TABLE)
    plt = _pyplot()
    for figure, path in ((metric_vs_rows_figure(metrics), FIGURES[0]), (failure_figure(failure_reasons(metrics)),
                                                                       FIGURES[1])):
        mlflow.log_figure(figure, path)
        plt.close(figure)


# ------------------------------------------------------------------------------------------------ the input dataset


def delta_version(spark, source: str) -> str | None:
    """The current version of a Delta table: from a local or FUSE path's ``_delta_log`` (its newest commit file), else
    ``DESCRIBE HISTORY`` (Databricks, or Spark with Delta Lake); None when ``source`` is not a Delta table."""
    if "/" in source and "://" not in source:
        log = Path(source) / "_delta_log"
        if not log.is_dir():
            return None
        commits = [int(p.stem) for p in log.glob("*.json") if p.stem.isdigit()]
        return str(max(commits)) if commits else None
    if spark is None:
        return None
    target = f"delta.`{source}`" if "/" in source else ".".join(f"`{p.strip('`')}`" for p in source.split("."))
    try:
        row = spark.sql(f"DESCRIBE HISTORY {target} LIMIT 1").collect()
    except Exception:  # noqa: BLE001 - not a Delta table (Parquet, CSV, a view) or no Delta Lake here
        return None
    return str(row[0]["version"]) if row else None


def input_dataset(spark, source: str, *, fingerprint: str, schema=None, fmt: str | None = None):
    """``(mlflow Dataset, Delta version or None)`` describing the training input without reading it: a
    ``MetaDataset`` whose source is the Delta table (name or path, with its version) or the Spark table or path, and
    whose digest is the run fingerprint (every group's key and data fingerprint with the settings)."""
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.spark_dataset_source import SparkDatasetSource

    version = delta_version(spark, source) if fmt in (None, "delta", "table") else None
    is_path = "/" in source
    if version is not None:
        src = DeltaDatasetSource(path=source, delta_table_version=int(version)) if is_path else \
            DeltaDatasetSource(delta_table_name=source, delta_table_version=int(version))
    else:
        src = SparkDatasetSource(path=source) if is_path else SparkDatasetSource(table_name=source)
    name = source.rstrip("/").rsplit("/", 1)[-1] if is_path else source
    return MetaDataset(src, name=name[:500], digest=fingerprint[:36] or None, schema=schema), version
