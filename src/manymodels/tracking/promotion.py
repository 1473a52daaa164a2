"""Promoting a registered version: the champion/challenger quality gate on the registry, MLflow client only.

``promote`` resolves ``@challenger`` and ``@champion``, reads the ``group_metrics.parquet`` each one's training run
logged, lets ``core.promotion.evaluate`` decide, writes the verdict onto the challenger version (its description and
``manymodels.gate.*`` tags, so the registry shows why a version was or was not promoted) and only then moves the
champion alias. It uses ``mlflow.MlflowClient`` alone, so it runs the same on the local sqlite registry and on
Databricks (Unity Catalog: ``catalog.schema.model`` names, the workspace's runs). Driver only.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from manymodels.core.promotion import GateThresholds, GateVerdict, evaluate, metric_direction
from manymodels.errors import InputError, QualityGateError
from manymodels.tracking.context import model_name
from manymodels.tracking.report import compose_description, gate_section

METRICS_ARTIFACT = "group_metrics.parquet"  # what tracking.runs.log_training logs for every training run
GATE_TAG_PREFIX = "manymodels.gate."
MISSING_CODES = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


@dataclass(frozen=True)
class Promotion:
    """The outcome of ``promote``: the challenger version, the verdict and whether the champion alias moved."""

    model_name: str
    version: int
    champion_alias: str
    verdict: GateVerdict
    promoted: bool  # the champion alias now points at ``version`` (False: a dry run, or the gate failed)
    compared_with: int | None = None  # the champion version compared with; None: a first promotion

    @property
    def ok_fraction(self) -> float:
        return self.verdict.ok_fraction


def promote(name: str | None, *, alias: str = "challenger", champion_alias: str = "champion",
            metric: str | None = None, max_median_worse: float = 0.05, max_worse_fraction: float = 0.6,
            min_shared_fraction: float = 0.5, min_ok_fraction: float = 0.95, dry_run: bool = False,
            client=None, log: Callable[[str], None] = print) -> Promotion:
    """Move ``@champion_alias`` of model ``name`` to the version ``@alias`` points at if it passes the gate
    (``core.promotion``: ok fraction, then the champion comparison on ``metric``; no champion yet: the ok
    fraction alone). The verdict is written to the challenger version first, in every case.

    A failed gate raises ``QualityGateError`` (its ``promotion`` holds the verdict) and leaves the champion alias
    where it was; ``dry_run`` writes the verdict, moves nothing and returns it whether it passed or not.
    ``client``: an ``MlflowClient`` (default: one on the configured tracking and registry URIs)."""
    thresholds = GateThresholds(min_ok_fraction, max_median_worse, max_worse_fraction, min_shared_fraction)
    if metric:
        metric_direction(metric)  # an unknown metric is refused before any registry call
    if client is None:
        from mlflow import MlflowClient

        client = MlflowClient()
    name = model_name(name)
    challenger = _version(client, name, alias)
    if challenger is None:
        raise InputError(f"{name} has no version with alias @{alias}: expected the version a training run "
                         f"registered (manymodels train --alias {alias}). Fix: train with that alias, or pass the "
                         "alias the version has.")
    champion = _version(client, name, champion_alias)
    verdict = evaluate(group_metrics(client, name, challenger, alias),
                       None if champion is None else group_metrics(client, name, champion, champion_alias),
                       metric=metric, thresholds=thresholds)
    compared_with = None if champion is None else int(champion.version)
    record_verdict(client, name, challenger, verdict, champion_alias, compared_with)
    promoted = verdict.passed and not dry_run
    promotion = Promotion(name, int(challenger.version), champion_alias, verdict, promoted, compared_with)
    where = f"v{compared_with}" if compared_with is not None else "no version"
    if not verdict.passed and not dry_run:
        raise QualityGateError(f"{name} v{challenger.version} (@{alias}) failed the quality gate; "
                               f"@{champion_alias} stays at {where}.\n{verdict.summary()}", promotion)
    if promoted:
        client.set_registered_model_alias(name, champion_alias, str(challenger.version))
        log(f"{name}: @{champion_alias} -> v{challenger.version} (was {where})\n{verdict.summary()}")
    else:
        log(f"{name}: dry run, @{champion_alias} stays at {where}\n{verdict.summary()}")
    return promotion


def _version(client, name: str, alias: str):
    """The version ``alias`` points at, or None when the alias is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        missing_alias = exc.error_code == "INVALID_PARAMETER_VALUE" and "alias" in str(exc).lower()
        if exc.error_code in MISSING_CODES or missing_alias:
            return None
        raise


def group_metrics(client, name: str, version, alias: str) -> pd.DataFrame:
    """The per-group metrics of the training run that registered ``version`` (an ``InputError`` naming the version
    when there is none: only per-group training runs can be compared)."""
    from mlflow.exceptions import MlflowException

    if not version.run_id:
        raise InputError(f"{name} v{version.version} (@{alias}) has no training run: expected a version registered "
                         "by manymodels train, whose run logs group_metrics.parquet.")
    with tempfile.TemporaryDirectory(prefix="manymodels-gate-") as tmp:
        try:
            path = client.download_artifacts(version.run_id, METRICS_ARTIFACT, tmp)
        except (MlflowException, OSError) as exc:
            raise InputError(f"{name} v{version.version} (@{alias}): its run {version.run_id} has no "
                             f"{METRICS_ARTIFACT} ({exc}). Only per-group training runs (manymodels train) can be "
                             "gated; point the alias at such a version.") from exc
        return pd.read_parquet(Path(path))


def gate_tags(verdict: GateVerdict, compared_with: int | None) -> dict[str, str]:
    """The ``manymodels.gate.*`` tags of a verdict (registry tags are text)."""
    figures = {"passed": str(verdict.passed).lower(), "metric": verdict.metric,
               "compared_with": "none" if compared_with is None else str(compared_with),
               "ok_fraction": f"{verdict.ok_fraction:.6g}"}
    if verdict.compared:
        figures.update(median_champion=f"{verdict.median_champion:.6g}",
                       median_challenger=f"{verdict.median_challenger:.6g}",
                       relative_change=f"{verdict.relative_change:.6g}", worse_fraction=f"{verdict.worse_fraction:.6g}",
                       shared_groups=str(verdict.shared_groups))
    return {GATE_TAG_PREFIX + key: value for key, value in figures.items()}


def record_verdict(client, name: str, version, verdict: GateVerdict, champion_alias: str,
                   compared_with: int | None) -> None:
    """Write the verdict onto ``version``: the "Promotion gate" section of its description (the training summary
    above it is kept) and the ``manymodels.gate.*`` tags, replacing those of an earlier verdict (a tag the new
    verdict does not have, such as the champion compared with, is deleted)."""
    against = f"@{champion_alias} v{compared_with}" if compared_with is not None else f"no @{champion_alias} yet"
    current = client.get_model_version(name, str(version.version))
    client.update_model_version(name, str(version.version), description=compose_description(
        current.description, gate=gate_section(f"manymodels quality gate against {against}\n{verdict.summary()}")))
    tags = gate_tags(verdict, compared_with)
    for key in set(current.tags or {}) - set(tags):
        if key.startswith(GATE_TAG_PREFIX):
            client.delete_model_version_tag(name, str(version.version), key)
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version.version), key, value)
