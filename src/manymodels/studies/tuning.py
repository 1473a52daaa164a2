"""The tuning job (``manymodels tune``, notebook 03, the weekly tuning job): a search on a table or on
scikit-learn's diabetes data, logged and registered; with ``compare`` on, the same grid run by MLlib's
``CrossValidator`` and by a thread pool of ``GridSearchCV`` on a bounded sample, for comparison (``TuneReport``).
The search itself is ``spark.search``; this module is its demonstration and the job's entry point.

Sizes: a per-group search (``group_cols``) reads its input through Spark and scales with it; a global search
stages the whole input once and every Python worker loads all of it (``spark.search``), so it is refused above
``GLOBAL_SEARCH_MAX_ROWS`` rows (an ``InputError`` naming the fix: group_cols, or a sample). The comparison
brings at most ``COMPARE_MAX_ROWS`` rows to the driver; nothing else collects the input.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from manymodels import tracking
from manymodels.core import search as S
from manymodels.core.checks import NUMERIC_SPARK_TYPES, parse_bool
from manymodels.core.estimators import is_classifier_estimator, load_estimator
from manymodels.errors import InputError, short_list
from manymodels.locations import Locations
from manymodels.settings import DEFAULT_VOLUME
from manymodels.spark.inputs import read_any
from manymodels.spark.search import GroupSearchResult, SearchResult, is_spark_frame, search, search_per_group
from manymodels.spark.session import cols, parallelism
from manymodels.storage.model_table import default_location

MLLIB_PARAMS = {"n_estimators": "numTrees", "max_depth": "maxDepth", "min_samples_leaf": "minInstancesPerNode",
                "max_bins": "maxBins"}
MLLIB_METRICS = {"r2": ("r2", 1.0), "neg_root_mean_squared_error": ("rmse", -1.0),
                 "neg_mean_squared_error": ("mse", -1.0), "neg_mean_absolute_error": ("mae", -1.0),
                 "accuracy": ("accuracy", 1.0), "f1_weighted": ("f1", 1.0)}
# A global search stages the input once and every Python worker loads all of it (spark.search): above this many
# rows it is refused (tune(max_rows=...) moves the bound for workers with the memory).
GLOBAL_SEARCH_MAX_ROWS = 5_000_000
# The comparison (MLlib, driver thread pool) runs on at most this many rows brought to the driver.
COMPARE_MAX_ROWS = 100_000


@dataclass
class TuneReport:
    """What notebook 03 and ``manymodels tune`` show: the approaches side by side, the search, the MLflow entry."""

    comparison: pd.DataFrame
    result: object  # SearchResult or GroupSearchResult
    logged: object  # tracking.LoggedTraining
    ui_command: str

    def summary(self) -> str:
        r = self.result
        lines = ["approach                      seconds   best CV score   best params"]
        for row in self.comparison.itertuples():
            score = "" if pd.isna(row.cv_score) else f"{row.cv_score:.4f}"
            lines.append(f"{row.approach:28s} {row.seconds:8.2f}   {score:>13s}   "
                         f"{row.best_params} {row.note}".rstrip())
        if isinstance(r, GroupSearchResult):
            lines.append(f"groups            {r.table.n_groups} searched: {r.table.counts['ok']} ok, "
                         f"{r.table.counts['failed']} failed, {r.table.counts['skipped']} skipped")
            lines.append(f"model table       {r.table.location} (train with params_from= this location to use "
                         "each group's best parameters)")
        lines += [f"MLflow run        {self.logged.run_id}",
                  f"registered model  {self.logged.model_uri} (version {self.logged.version})",
                  f"browse            {self.ui_command}"]
        return "\n".join(lines)


def _load_tune_input(spark, input_path: str, label_col: str):
    """Empty ``input_path``: scikit-learn's diabetes dataset (shipped with it, no download), as pandas; else the
    input as a Spark DataFrame (never collected)."""
    if not input_path:
        from sklearn.datasets import load_diabetes

        return load_diabetes(as_frame=True).frame
    df = read_any(spark, input_path)
    if label_col not in df.columns:
        raise InputError(f"label_col {label_col!r} is not a column of {input_path}: "
                         f"found {short_list(df.columns, 12)}.")
    return df


def _numeric_features(data, label_col: str, group_cols) -> list[str]:
    if isinstance(data, pd.DataFrame):
        numeric = list(data.select_dtypes("number").columns)
    else:
        numeric = [c for c, t in data.dtypes if t.startswith(NUMERIC_SPARK_TYPES + ("decimal",))]
    return [c for c in numeric if c != label_col and c not in group_cols]


def _features(data, feature_cols: str, label_col: str, groups: list[str]) -> list[str]:
    """``feature_cols`` (comma-separated; each must be a column), or every numeric column but the label and the
    group columns."""
    given = [c.strip() for c in str(feature_cols or "").split(",") if c.strip()]
    if not given:
        return _numeric_features(data, label_col, groups)
    missing = [c for c in given if c not in data.columns]
    if missing:
        raise InputError(f"feature_cols: column(s) {short_list(missing)} not in the input, which has "
                         f"{short_list(list(data.columns), 12)}. Fix the names, or leave feature_cols empty for every "
                         "numeric column but the label and group columns.")
    return given


def _parse_grid(text: str):
    if isinstance(text, dict):
        return text
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"param_grid {text!r} is not JSON ({exc}): "
                         "expected e.g. '{\"n_estimators\": [10, 20, 50]}'.") from exc
    return grid


def tune(spark, *, input_path: str = "", label_col: str = "target",
         estimator: str = "sklearn.ensemble.RandomForestRegressor",
         param_grid: str = '{"n_estimators": [10, 20, 50]}', cv: str = "3", scoring: str = "r2",
         group_cols: str = "", feature_cols: str = "", model_name: str = "manymodels_tuned", alias: str = "champion",
         experiment: str = "", catalog: str = "", schema: str = "", volume: str = DEFAULT_VOLUME,
         staging_dir: str = "", compare: str = "false", model_table: str = "", location: str | None = None,
         max_rows: int | None = None) -> TuneReport:
    """The notebook's and the CLI's one call (string parameters, as widgets and job parameters give them; the
    defaults are those of ``manymodels.jobs.params``, a test checks).

    ``input_path``: a table, Parquet folder or CSV (read through Spark, never collected); empty: scikit-learn's
    diabetes data. ``feature_cols``: comma-separated (empty: every numeric column but the label and group columns).
    The model is registered as ``catalog.schema.model_name`` when both are set. Global search (empty
    ``group_cols``): the input is staged for every worker, so more than ``max_rows`` rows (default
    ``GLOBAL_SEARCH_MAX_ROWS``) are refused; the best model is logged and registered; ``compare`` ("true") also
    times MLlib's ``CrossValidator`` and a driver thread pool on at most ``COMPARE_MAX_ROWS`` rows. Per-group
    search: the per-group best models are written to a model table (``location`` or ``model_table``, a folder or
    table name every executor can write; default: ``<catalog>.<schema>.<model_name>_groups`` on Databricks, else
    the local ``tuned_model_table`` folder), whose ``params`` column is what ``train_and_register(params_from=...)``
    reads, and their router is registered; ``compare`` does not apply. ``staging_dir``: where executors read staged data
    (empty: ``Locations.staging_dir``: the volume's ``_staging`` on Databricks)."""
    est, _ = load_estimator(estimator)
    grid = _parse_grid(param_grid)
    groups = [c.strip() for c in str(group_cols or "").split(",") if c.strip()]
    comparing = parse_bool("compare", compare)
    where = Locations(catalog, schema, volume)
    name = where.model_name(model_name)
    staging = where.staging_dir(staging_dir)
    # Parameter names, scoring and cv are checked before the input is read or MLflow is touched.
    S.make_search_spec(estimator=est, feature_cols=("<features>",), label_col=label_col, param_grid=grid, cv=cv,
                       scoring=scoring or None, group_cols=groups)
    data = _load_tune_input(spark, input_path, label_col)
    features = _features(data, feature_cols, label_col, groups)
    common = dict(label_col=label_col, estimator=est, feature_cols=features, param_grid=grid, cv=cv,
                  scoring=scoring or None)
    if groups:
        ctx = tracking.configure(experiment=experiment or None)  # before any worker touches the store
        sdf = data if is_spark_frame(data) else spark.createDataFrame(data)
        table = location or model_table or (f"{name}_groups" if where.in_volume
                                            else default_location("tuned_model_table"))
        start = time.perf_counter()
        result = search_per_group(sdf, group_cols=groups, location=table, staging=staging, **common)
        seconds = time.perf_counter() - start
        comparison = pd.DataFrame([{"approach": "manymodels per-group search", "seconds": seconds,
                                    "cv_score": float(result.best["best_score"].mean()),
                                    "best_params": f"{len(result.best)} groups", "note": "(mean of group bests)"}])
        logged = tracking.log_search_per_group(spark, result, ctx, name=name, alias=alias)
        return TuneReport(comparison, result, logged, tracking.ui_command(ctx))
    n_rows = len(data) if isinstance(data, pd.DataFrame) else data.count()
    max_rows = max_rows or GLOBAL_SEARCH_MAX_ROWS
    if n_rows > max_rows:
        raise InputError(
            f"input_path={input_path!r} has {n_rows:,} rows: a global search (empty group_cols) stages the whole "
            f"input and every Python worker loads all of it, so it is limited to {max_rows:,} rows. Fix: set "
            "group_cols for one search per group (it scales with the input), or tune on a sample of the input "
            "(e.g. a table of df.sample(fraction=...)); with workers of enough memory, raise tune(max_rows=...).")
    ctx = tracking.configure(experiment=experiment or None)  # before any worker touches the store
    rows = []
    start = time.perf_counter()
    result = search(spark, data, staging=staging, **common)
    rows.append(_row("manymodels search", time.perf_counter() - start, result.best_params, result.best_score,
                     f"({n_rows:,} rows)" if comparing else ""))
    if comparing:
        rows = _compare(spark, data, result, features, label_col, n_rows) + rows
    logged = tracking.log_search(result, ctx, name=name, alias=alias)
    return TuneReport(pd.DataFrame(rows), result, logged, tracking.ui_command(ctx))


def _row(approach, seconds, params, score, note=""):
    return {"approach": approach, "seconds": seconds, "cv_score": score,
            "best_params": json.dumps(params, sort_keys=True, default=str), "note": note}


def _compare(spark, data, result: SearchResult, features, label_col, n_rows: int,
             max_rows: int | None = None) -> list[dict]:
    """MLlib's ``CrossValidator`` and a driver thread pool over the same grid, on at most ``max_rows`` rows (the
    first ones, ``limit``): the thread pool needs the rows on the driver. The notes say when it was a sample."""
    spec = result.spec
    max_rows = max_rows or COMPARE_MAX_ROWS
    if isinstance(data, pd.DataFrame):
        pdf = data.head(max_rows)
    else:
        pdf = data.select(*cols([*features, label_col])).limit(max_rows).toPandas()
    sampled = len(pdf) < n_rows
    on = f"; on a sample of {len(pdf):,} of {n_rows:,} rows" if sampled else ""
    start = time.perf_counter()
    cv = S.search_thread_pool(pdf, spec, n_threads=parallelism(spark))
    seconds = time.perf_counter() - start
    index, params, score = S.best_of(cv, spec)
    rows = [_row("driver thread pool", seconds, params, score, f"({'same fold rule' if sampled else 'same folds'}"
                 f"{on})")]
    sdf = data if is_spark_frame(data) and not sampled else spark.createDataFrame(pdf)
    mllib = mllib_cross_validator(sdf, spec)
    if on and not mllib["note"].startswith("(skipped"):
        mllib["note"] = mllib["note"][:-1] + on + ")"
    rows.insert(0, mllib)
    return rows


def mllib_cross_validator(sdf, spec: S.SearchSpec, parallelism_: int = 2) -> dict:
    """Spark MLlib's ``CrossValidator`` over the same grid (MLlib's random forest and its own random folds).

    Only scikit-learn random forests with parameters MLlib knows are translated; otherwise the row says why not."""
    name = type(spec.estimator).__name__
    scoring = spec.scoring[0] if spec.scoring else ("r2" if not is_classifier_estimator(spec.estimator) else "accuracy")
    unknown = sorted({k for c in spec.candidates for k in c if k not in MLLIB_PARAMS})
    why = (f"{name} has no MLlib counterpart here" if name not in ("RandomForestRegressor", "RandomForestClassifier")
           else f"parameter(s) {unknown} have no MLlib name" if unknown
           else f"scoring {scoring!r} has no MLlib evaluator" if scoring not in MLLIB_METRICS or len(spec.scoring) > 1
           else "")
    if why:
        return {"approach": "MLlib CrossValidator", "seconds": float("nan"), "cv_score": float("nan"),
                "best_params": "", "note": f"(skipped: {why})"}
    from pyspark.ml import Pipeline
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator, RegressionEvaluator
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

    if name == "RandomForestRegressor":
        from pyspark.ml.regression import RandomForestRegressor as MLlibForest
        evaluator_cls = RegressionEvaluator
    else:
        from pyspark.ml.classification import RandomForestClassifier as MLlibForest
        evaluator_cls = MulticlassClassificationEvaluator
    metric, sign = MLLIB_METRICS[scoring]
    forest = MLlibForest(featuresCol="features", labelCol=spec.label_col, seed=spec.seed)
    grid = ParamGridBuilder()
    values: dict[str, list] = {}
    for c in spec.candidates:
        for k, v in c.items():
            values.setdefault(k, [])
            if v not in values[k]:
                values[k].append(v)
    for k, vs in values.items():
        grid = grid.addGrid(forest.getParam(MLLIB_PARAMS[k]), vs)
    maps = grid.build()
    pipeline = Pipeline(stages=[VectorAssembler(inputCols=list(spec.feature_cols), outputCol="features"), forest])
    evaluator = evaluator_cls(labelCol=spec.label_col, metricName=metric)
    start = time.perf_counter()
    model = CrossValidator(estimator=pipeline, estimatorParamMaps=maps, evaluator=evaluator,
                           numFolds=spec.n_splits, parallelism=parallelism_, seed=spec.seed).fit(sdf)
    seconds = time.perf_counter() - start
    metrics = list(model.avgMetrics)
    best = int(np.argmax(metrics) if evaluator.isLargerBetter() else np.argmin(metrics))
    params = {k: maps[best][forest.getParam(MLLIB_PARAMS[k])] for k in values}
    return _row("MLlib CrossValidator", seconds, params, sign * metrics[best], "(MLlib forest, own folds)")

