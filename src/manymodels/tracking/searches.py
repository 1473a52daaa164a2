"""Logging searches: a global search's best model (``log_search``) and a per-group search's router
(``log_search_per_group``), through the same logging and registration as training runs."""
from __future__ import annotations

import numpy as np

from manymodels.core import search as S
from manymodels.core.search import loggable
from manymodels.errors import InputError
from manymodels.tracking.runs import log_estimator, log_training


def log_search(result, ctx, *, name: str, alias: str = "champion", run_key: str | None = None):
    """The best model through ``log_estimator``: one run (keyed by the search id), the candidate
    results as a table artifact, the best parameters as params, the model registered with ``alias``."""
    if result.best_estimator is None:
        raise InputError("This search ran with refit=False: there is no best model to log. Run it with refit=True.")
    spec = result.spec
    params = {**{k: v for k, v in result.best_params.items()}, "search.estimator": type(spec.estimator).__name__,
              "search.cv": repr(spec.cv), "search.scoring": ",".join(spec.scoring) or "estimator.score",
              "search.refit": spec.refit, "search.n_candidates": len(spec.candidates),
              "search.n_splits": spec.n_splits}
    best = result.cv_results.iloc[result.best_index]
    metrics = {f"best_mean_test_{k}": best[f"mean_test_{k}"] for k in spec.score_keys}
    metrics.update({f"best_std_test_{k}": best[f"std_test_{k}"] for k in spec.score_keys})
    metrics.update({f"{k}_seconds": v for k, v in result.timings.items()})
    metrics = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
    return log_estimator(result.best_estimator, ctx, run_key=run_key or spec.search_id, name=name,
                         input_example=result.input_example, alias=alias, params=params, metrics=metrics,
                         tables={"cv_results": loggable(result.cv_results)}, tags={"manymodels.kind": "search"},
                         serialization_format="cloudpickle")  # skops refuses tree models on load


def log_search_per_group(spark, result, ctx, *, name: str | None = None, alias: str = "champion"):
    """A per-group search's model table through ``log_training`` (one registered router of the per-group best
    models), with its cv rows and every group's best parameters as table artifacts."""
    spec = result.spec
    extra = {"search.cv": repr(spec.cv), "search.scoring": ",".join(spec.scoring) or "estimator.score",
             "search.refit": spec.refit, "search.n_candidates": len(spec.candidates),
             "search.param_names": ",".join(dict.fromkeys(k for c in spec.candidates for k in c))}
    best = result.best.copy()
    best["best_params"] = [S.json_params(p) for p in best["best_params"]]
    return log_training(spark, result.table, ctx, name=name, alias=alias, extra_params=extra,
                        tables={"cv_results": loggable(result.cv_results), "best_params": best})
