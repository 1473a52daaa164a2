"""The public functions, where a model may be named by MLflow URI as well as passed as an object.

The Spark layer scores what it is given (a ``ModelTable``, staged ``GroupModels``, a fitted estimator); the
MLflow layer turns a URI (``models:/name@alias``, ``models:/name/3``, a run id) into those. This module is the
one place that joins the two, so neither layer imports the other's upward neighbour.
"""
from __future__ import annotations

from manymodels import tracking
from manymodels.spark import scoring
from manymodels.spark.search import search, search_per_group
from manymodels.spark.session import master_of
from manymodels.spark.training import train_per_file, train_per_group
from manymodels.storage.staging import staging_root

__all__ = ["train_per_group", "train_per_file", "score_per_group", "score_single", "search", "search_per_group"]


def score_per_group(df, model, *, staging_dir: str | None = None, **options):
    """Score ``df`` per group (``spark.scoring.score_per_group``, whose ``options`` it takes). ``model``: a
    ``ModelTable``, a registered router URI (``models:/name@alias`` or ``models:/name/3``), or the MLflow run id
    of a training run. Its store is staged under ``<staging_dir>/models`` (``staging_dir``: a folder every worker
    can read; default ``storage.staging.staging_root()``: ``$MANYMODELS_STAGING``, on Databricks a Volume folder,
    never ``/dbfs/tmp`` nor the driver's working directory), checked against the version's index."""
    if isinstance(model, str):
        root = staging_root(staging_dir, master=master_of(df.sparkSession))  # warns when executors cannot read it
        model = tracking.group_models(model, str(root))
    return scoring.score_per_group(df, model, staging_dir=staging_dir, **options)


def score_single(df, model, *, feature_cols=None, **options):
    """Score every row of ``df`` with one model: a fitted estimator or any MLflow model URI
    (``spark.scoring.score_single``, whose ``options`` it takes)."""
    if isinstance(model, str):
        obj, version, types = tracking.load_for_scoring(model)
        model = scoring.resolve_single_model(obj, feature_cols, version=version, types=types)
    return scoring.score_single(df, model, feature_cols=feature_cols, **options)
