"""The tuning job (``manymodels tune``, notebook 03, the weekly tuning job): a search on a table or on
scikit-learn's diabetes data, logged and registered, and, for a global search, the same grid run by MLlib's
``CrossValidator`` and by a thread pool of ``GridSearchCV`` for comparison (``TuneReport``). The search itself is
``spark.search``; this module is its demonstration.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from manymodels import tracking
from manymodels.core import search as S
from manymodels.core.checks import NUMERIC_SPARK_TYPES
from manymodels.core.estimators import is_classifier_estimator, load_estimator
from manymodels.errors import InputError, short_list
from manymodels.spark.inputs import read_any
from manymodels.spark.search import GroupSearchResult, SearchResult, is_spark_frame, search, search_per_group
from manymodels.spark.session import cols, parallelism

MLLIB_PARAMS = {"n_estimators": "numTrees", "max_depth": "maxDepth", "min_samples_leaf": "minInstancesPerNode",
                "max_bins": "maxBins"}
MLLIB_METRICS = {"r2": ("r2", 1.0), "neg_root_mean_squared_error": ("rmse", -1.0),
                 "neg_mean_squared_error": ("mse", -1.0), "neg_mean_absolute_error": ("mae", -1.0),
                 "accuracy": ("accuracy", 1.0), "f1_weighted": ("f1", 1.0)}


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
        lines += [f"MLflow run        {self.logged.run_id}",
                  f"registered model  {self.logged.model_uri} (version {self.logged.version})",
                  f"browse            {self.ui_command}"]
        return "\n".join(lines)


def _load_tune_input(spark, input_path: str, label_col: str):
    """Empty ``input_path``: scikit-learn's diabetes dataset (shipped with it, no download), as pandas."""
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


def _parse_grid(text: str):
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"param_grid {text!r} is not JSON ({exc}): "
                         "expected e.g. '{\"n_estimators\": [10, 20, 50]}'.") from exc
    return grid


def tune(spark, *, input_path: str = "", label_col: str = "target",
         estimator: str = "sklearn.ensemble.RandomForestRegressor",
         param_grid: str = '{"n_estimators": [10, 20, 50]}', cv: str = "3", scoring: str = "r2",
         group_cols: str = "", model_name: str = "manymodels_tuned", alias: str = "champion", experiment: str = "",
         compare: bool = True) -> TuneReport:
    """The notebook's and the CLI's one call (string parameters, as widgets and job parameters give them; the
    defaults are those of ``manymodels.jobs.params``, a test checks).

    Global search (empty ``group_cols``): MLlib ``CrossValidator``, a driver thread pool and manymodels' search
    side by side, then the best model logged and registered. Per-group search: manymodels only, the router of the
    per-group best models registered."""
    est, _ = load_estimator(estimator)
    grid = _parse_grid(param_grid)
    groups = [c.strip() for c in group_cols.split(",") if c.strip()]
    # Parameter names, scoring and cv are checked before the input is read or MLflow is touched.
    S.make_search_spec(estimator=est, feature_cols=("<features>",), label_col=label_col, param_grid=grid, cv=cv,
                       scoring=scoring or None, group_cols=groups)
    data = _load_tune_input(spark, input_path, label_col)
    features = _numeric_features(data, label_col, groups)
    ctx = tracking.configure(experiment=experiment or None)  # before any worker touches the store
    common = dict(label_col=label_col, estimator=est, feature_cols=features, param_grid=grid, cv=cv,
                  scoring=scoring or None)
    if groups:
        sdf = data if is_spark_frame(data) else spark.createDataFrame(data)
        start = time.perf_counter()
        result = search_per_group(sdf, group_cols=groups, **common)
        seconds = time.perf_counter() - start
        comparison = pd.DataFrame([{"approach": "manymodels per-group search", "seconds": seconds,
                                    "cv_score": float(result.best["best_score"].mean()),
                                    "best_params": f"{len(result.best)} groups", "note": "(mean of group bests)"}])
        logged = tracking.log_search_per_group(spark, result, ctx, name=model_name, alias=alias)
        return TuneReport(comparison, result, logged, tracking.ui_command(ctx))
    rows = []
    start = time.perf_counter()
    result = search(spark, data, **common)
    rows.append(_row("manymodels search", time.perf_counter() - start, result.best_params, result.best_score))
    if compare:
        rows = _compare(spark, data, result, features, label_col) + rows
    logged = tracking.log_search(result, ctx, name=model_name, alias=alias)
    return TuneReport(pd.DataFrame(rows), result, logged, tracking.ui_command(ctx))


def _row(approach, seconds, params, score, note=""):
    return {"approach": approach, "seconds": seconds, "cv_score": score,
            "best_params": json.dumps(params, sort_keys=True, default=str), "note": note}


def _compare(spark, data, result: SearchResult, features, label_col) -> list[dict]:
    spec = result.spec
    pdf = data if isinstance(data, pd.DataFrame) else data.select(*cols([*features, label_col])).toPandas()
    start = time.perf_counter()
    cv = S.search_thread_pool(pdf, spec, n_threads=parallelism(spark))
    seconds = time.perf_counter() - start
    index, params, score = S.best_of(cv, spec)
    rows = [_row("driver thread pool", seconds, params, score, "(same folds)")]
    sdf = data if is_spark_frame(data) else spark.createDataFrame(pdf)
    rows.insert(0, mllib_cross_validator(sdf, spec))
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

