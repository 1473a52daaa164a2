"""Per-group estimator parameters (pure): each group's tuned parameters on top of the run's estimator.

A per-group search (``spark.search.search_per_group``, ``manymodels tune --group-cols``) writes one model-table row
per group whose ``params`` column records the parameters its best model was fitted with (``estimators.params_json``:
top-level parameters, objects by their ``repr``). Training with ``params_from`` reads those rows and fits each listed
group with them, over the run's ``estimator_params``; other groups keep the run's estimator.

How they travel: the distinct parameter sets (a handful: at most the grid's size, however many groups) are JSON
texts in ``TrainSpec.group_params``; each row carries ``GROUP_PARAMS_COL``, the index of its group's set (-1: none),
joined from the small partition plan, so the fitting code (``fitting.fit_packed``) reads one small integer per group
and the spec stays small at any number of groups. Each group's ``spec_fingerprint`` folds its own set in
(``group_fingerprints``), so ``retrain="changed"`` retrains exactly the groups whose parameters changed.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from manymodels.core.estimators import seed_param_names
from manymodels.core.keys import canonical_key
from manymodels.errors import InputError, short_list

GROUP_PARAMS_COL = "_mm_params"  # a row's index into TrainSpec.group_params; -1: the run's estimator as it is
_PLAIN = (int, float, str, bool, type(None))


def tuned_overrides(estimator, recorded: str | dict, *, where: str = "params_from") -> dict:
    """The parameters of a tuned model's ``params`` record to set on ``estimator`` (already configured with the
    run's ``estimator_params``): every recorded top-level parameter whose value differs from the configured one,
    except the seeds (each group's seed is derived again from the run's seed and its key) and parameters the
    estimator holds as objects (recorded only as their ``repr``, not a value; a Pipeline's nested steps among
    them). A recorded name that is not a parameter of ``estimator`` is an ``InputError``: the table was tuned for
    another estimator."""
    values = json.loads(recorded) if isinstance(recorded, str) else dict(recorded or {})
    own = estimator.get_params(deep=False)
    unknown = [k for k in values if k not in own]
    if unknown:
        raise InputError(f"{where}: parameter(s) {short_list(unknown)} of its models are not parameters of "
                         f"{type(estimator).__name__} (its parameters: {short_list(sorted(own), 12)}): that table "
                         "was tuned for another estimator. Fix: train the estimator that was tuned, or leave "
                         "params_from empty.")
    seeds = set(seed_param_names(estimator))
    return {k: v for k, v in values.items()
            if k not in seeds and isinstance(own[k], _PLAIN) and (own[k] != v or type(own[k]) is not type(v))}


def attach(stats: pd.DataFrame, key_cols, estimator, tuned: pd.DataFrame, *,
           where: str = "params_from") -> tuple[pd.DataFrame, tuple[str, ...]]:
    """``stats`` (one row per input group) with ``GROUP_PARAMS_COL``, and the distinct parameter sets (JSON) the
    column indexes. ``tuned``: the key columns and ``params`` (a JSON text or dict per group); keys match by their
    canonical text (3 and 3.0 are one group). Groups absent from ``tuned`` get -1 (the run's estimator), and so do
    groups whose tuned parameters equal the configured ones."""
    keys = list(key_cols)
    missing = [k for k in keys if k not in tuned.columns]
    if missing:
        raise InputError(f"{where}: its model table has no column(s) {short_list(missing)} of group_cols "
                         f"{short_list(keys)} (it has {short_list(list(tuned.columns), 12)}). Fix: tune with the same "
                         "group_cols as the training, or leave params_from empty.")
    recorded = dict(zip((canonical_key(k) for k in tuned[keys].itertuples(index=False, name=None)), tuned["params"]))
    sets: dict[str, int] = {}
    by_record: dict[str, int] = {}
    codes = np.full(len(stats), -1, dtype=np.int32)
    for i, key in enumerate(stats[keys].itertuples(index=False, name=None)):
        record = recorded.get(canonical_key(key))
        if record is None:
            continue
        text = record if isinstance(record, str) else json.dumps(record, sort_keys=True)
        if text not in by_record:
            overrides = tuned_overrides(estimator, record, where=where)
            by_record[text] = sets.setdefault(json.dumps(overrides, sort_keys=True), len(sets)) if overrides else -1
        codes[i] = by_record[text]
    return stats.assign(**{GROUP_PARAMS_COL: codes}), tuple(sets)


def group_fingerprints(spec_fp: str, codes, sets: tuple[str, ...]) -> pd.Series:
    """Each group's spec fingerprint: ``spec_fp`` for a group on the run's estimator, else the first 16 hex digits
    of the SHA-256 of ``spec_fp`` and its parameter set."""
    per_set = [hashlib.sha256(f"{spec_fp}|{text}".encode()).hexdigest()[:16] for text in sets]
    return pd.Series([spec_fp if c < 0 else per_set[c] for c in np.asarray(codes)], dtype=object)


def decoded(sets: tuple[str, ...]) -> list[dict]:
    """The parameter sets as dicts (``fitting.fit_packed`` decodes them once per batch)."""
    return [json.loads(text) for text in sets]
