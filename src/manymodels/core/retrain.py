"""Retrain only what needs it (pure): fingerprints, and which groups a run trains or carries over.

Every model-table row records two fingerprints:

- ``data_fingerprint``: the group's rows as a multiset (row count and two 31-bit sums of a 64-bit
  hash of each row's feature and label values, computed by Spark in the same aggregate that counts
  the rows). It does not depend on row order, partitioning or the number of input files.
- ``spec_fingerprint``: everything else that decides a group's model (estimator class and
  parameters, columns, seed, holdout, min_rows, ..., and the versions of scikit-learn, numpy and of
  any other package an estimator class comes from), the same for every row of a run. An upgrade of
  one of those libraries changes it, so ``retrain="changed"`` refits every group after an upgrade
  instead of carrying models the new versions would not have produced.

A group's model bytes are a function of both (seeds come from the configured seed and the key,
rows are put in a content order before splitting), so a group whose fingerprints are unchanged
would be retrained into the same bytes: carrying its previous row over is exact, not approximate.

Modes (``retrain=``):

- ``all``: train every group of the input (the default).
- ``failed``: train groups whose previous row is ``failed`` and groups new to the input; carry the
  others over. The previous run must have the same spec (else there is nothing to carry).
- ``changed``: train groups whose data or spec fingerprint differs from the previous row, new
  groups and previously failed groups; carry the others over.

Groups of the previous table that are not in the input are not carried: a model table describes
the input it was trained from. Carried rows keep their model, checksum, metrics and data
fingerprint; ``carried_from`` names the training run that fitted them.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import fields

import pandas as pd

from manymodels.core.schema import STATUS_FAILED
from manymodels.errors import InputError

RETRAIN_MODES = ("all", "failed", "changed")
DATA_FP = "data_fingerprint"
SPEC_FP = "spec_fingerprint"
CARRIED_FROM = "carried_from"
HASH_LOW, HASH_HIGH = "_mm_h_low", "_mm_h_high"  # the two per-group hash sums of the Spark aggregate
PREVIOUS_COLS = ("status", DATA_FP, SPEC_FP, "training_run_id", CARRIED_FROM)
# Spec fields that do not change a model: the run's name, what the planner derives, raise-or-record, and the limits
# that decide only whether a model is kept (a group failed by one is retrained under a raised limit by
# retrain='failed', and tables written before the limits existed keep their fingerprints).
# Per-group parameters (``group_params``) are folded into each group's own fingerprint instead
# (``group_params.group_fingerprints``): one group's new parameters retrain that group only.
_NOT_MODEL_INPUTS = ("training_run_id", "sampled_from", "estimator", "failure_policy", "max_model_bytes",
                     "max_fit_seconds", "group_params")


def data_fingerprints(stats: pd.DataFrame) -> pd.Series:
    """``<rows>-<low sum>-<high sum>`` in hex from the aggregate's ``count`` and hash-sum columns."""
    parts = [stats[c].astype("int64").map("{:x}".format) for c in ("count", HASH_LOW, HASH_HIGH)]
    return parts[0] + "-" + parts[1] + "-" + parts[2]


def model_library_versions(estimator) -> dict[str, str]:
    """The versions of the libraries that decide a fitted model's bytes: scikit-learn and numpy (read now, not
    cached), plus the package of the estimator's class and of every estimator among its parameters (a Pipeline's
    steps, an ensemble's base estimator), where that package has a ``__version__``."""
    import numpy
    import sklearn

    versions = {"scikit-learn": str(sklearn.__version__), "numpy": str(numpy.__version__)}
    classes = [type(estimator)] + [type(v) for v in estimator.get_params(deep=True).values() if hasattr(v, "fit")]
    for cls in classes:
        package = cls.__module__.split(".")[0]
        module = sys.modules.get(package)
        if package not in ("sklearn", "numpy", "builtins") and getattr(module, "__version__", None) is not None:
            versions[package] = str(module.__version__)
    return dict(sorted(versions.items()))


def spec_fingerprint(spec) -> str:
    """SHA-256 (first 16 hex digits) of the spec fields that decide a group's model and of
    ``model_library_versions`` of its estimator."""
    est = spec.estimator
    described = {f.name: getattr(spec, f.name) for f in fields(spec) if f.name not in _NOT_MODEL_INPUTS}
    described["estimator"] = f"{type(est).__module__}.{type(est).__qualname__}"
    described["estimator_params"] = {k: repr(v) for k, v in sorted(est.get_params(deep=True).items())}
    described["library_versions"] = model_library_versions(est)
    text = json.dumps(described, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_mode(mode: str) -> None:
    if mode not in RETRAIN_MODES:
        raise InputError(f"retrain={mode!r}: expected one of {RETRAIN_MODES} ('all' trains every group; 'failed' "
                         "only failed and new groups; 'changed' only groups whose data or spec changed).")


def plan_retrain(current: pd.DataFrame, previous: pd.DataFrame | None, key_cols, mode: str,
                 spec_fp: str, *, location: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the input's groups into ``(to_train, to_carry)``.

    ``current``: one row per input group (key columns, ``count``, ``data_fingerprint``, and its own
    ``spec_fingerprint`` when groups have their own parameters: ``group_params.group_fingerprints``; else every
    group's is ``spec_fp``).
    ``previous``: the committed table's key columns and ``PREVIOUS_COLS`` (no blobs), or ``None``.
    ``to_train`` has ``current``'s rows to fit; ``to_carry`` the key columns of groups to copy over.
    """
    check_mode(mode)
    keys = list(key_cols)
    if mode == "all" or previous is None or previous.empty:
        return current, current[keys].iloc[0:0]
    per_group = SPEC_FP in current.columns
    if mode == "failed" and not per_group:
        specs = set(previous[SPEC_FP].dropna().unique())
        if specs != {spec_fp} or previous[SPEC_FP].isna().any():
            found = ", ".join(sorted(map(str, specs))) or "none recorded (a table written by an older manymodels)"
            raise InputError(
                f"retrain='failed' carries models over from the committed model table at {location or 'the location'}, "
                f"but it was trained with a different spec (spec_fingerprint {found}; this run's is {spec_fp}): "
                "its models would not be what this run asks for. Use retrain='changed' (retrains the groups whose "
                "data or spec changed) or retrain='all'.")
    merged = current.merge(previous[keys + list(PREVIOUS_COLS)], on=keys, how="left", indicator=True,
                           suffixes=("", "_previous"))
    new = merged["_merge"] == "left_only"
    train = new | (merged["status"] == STATUS_FAILED)
    spec_changed = (merged[f"{SPEC_FP}_previous"] != merged[SPEC_FP]) if per_group else (merged[SPEC_FP] != spec_fp)
    if mode == "failed" and per_group and (spec_changed & ~new).any():
        changed = merged.loc[(spec_changed & ~new).to_numpy(), keys]
        shown = "; ".join(", ".join(f"{k}={v}" for k, v in zip(keys, row))
                          for row in changed.head(3).itertuples(index=False, name=None))
        raise InputError(
            f"retrain='failed' carries models over from the committed model table at {location or 'the location'}, "
            f"but {len(changed)} group(s) of it were trained with other parameters or another spec than this run "
            f"gives them ({shown}{' ...' if len(changed) > 3 else ''}): their models would not be what this run asks "
            "for. Use retrain='changed' (retrains the groups whose data, parameters or spec changed) or "
            "retrain='all'.")
    if mode == "changed":
        train |= (merged[f"{DATA_FP}_previous"] != merged[DATA_FP]) | spec_changed
    to_train = current.loc[train.to_numpy()].reset_index(drop=True)
    to_carry = merged.loc[~train.to_numpy(), keys].reset_index(drop=True)
    return to_train, to_carry
