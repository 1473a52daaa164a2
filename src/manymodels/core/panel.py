"""Synthetic panels with known per-group truth, the two on-disk layouts, and readers.

``make_panel`` returns ``(rows, truth)``: rows hold the key columns, ``x0..x{k-1}`` and ``y``;
``truth`` holds each group's ``beta_0..beta_{k-1}`` and ``intercept``, so tests can check
recovered coefficients. Everything is reproducible from ``PanelSpec.seed``.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

from manymodels.core.spec import PanelSpec
from manymodels.errors import InputError


def group_sizes(spec: PanelSpec, rng: np.random.Generator) -> np.ndarray:
    if spec.size_distribution == "uniform":
        sizes = np.full(spec.n_groups, spec.mean_rows)
    elif spec.size_distribution == "poisson":
        sizes = rng.poisson(spec.mean_rows, spec.n_groups)
    elif spec.size_distribution == "zipf":
        # Rank-based Zipf weights scaled so the panel has the same total rows as the uniform one.
        weights = 1.0 / np.arange(1, spec.n_groups + 1) ** spec.zipf_exponent
        sizes = np.round(weights / weights.sum() * spec.n_groups * spec.mean_rows)
        sizes = rng.permutation(sizes)
    else:
        raise InputError(f"size_distribution={spec.size_distribution!r}: expected 'uniform', 'poisson' or 'zipf'.")
    return np.maximum(sizes.astype(np.int64), spec.min_rows)


def feature_names(n: int) -> list[str]:
    return [f"x{i}" for i in range(n)]


def _keys(spec: PanelSpec) -> pd.DataFrame:
    if len(spec.key_cols) == 1:
        return pd.DataFrame({spec.key_cols[0]: np.arange(spec.n_groups, dtype=np.int64)})
    if len(spec.key_cols) != 2:
        raise InputError(f"key_cols={spec.key_cols}: the synthetic panel supports one or two key columns.")
    width = int(np.ceil(np.sqrt(spec.n_groups)))
    ids = np.arange(spec.n_groups, dtype=np.int64)
    return pd.DataFrame({spec.key_cols[0]: ids // width, spec.key_cols[1]: ids % width})


def make_panel(spec: PanelSpec = PanelSpec()) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(spec.seed)
    sizes = group_sizes(spec, rng)
    keys = _keys(spec)
    k = spec.n_features
    betas = rng.normal(0.0, 2.0, size=(spec.n_groups, k))
    intercepts = rng.normal(10.0, 3.0, size=spec.n_groups)
    total = int(sizes.sum())
    owner = np.repeat(np.arange(spec.n_groups), sizes)
    X = rng.normal(size=(total, k))
    y = np.einsum("ij,ij->i", X, betas[owner]) + intercepts[owner] + rng.normal(0.0, spec.noise, total)
    rows = keys.iloc[owner].reset_index(drop=True)
    rows[feature_names(k)] = X
    rows["y"] = y
    truth = keys.copy()
    truth[[f"beta_{i}" for i in range(k)]] = betas
    truth["intercept"] = intercepts
    truth["n_rows"] = sizes
    return rows, truth


def write_gzip_per_group(rows: pd.DataFrame, key_cols, out_dir: str | Path) -> list[Path]:
    """Layout (a): one gzipped CSV per group, named by its key, so each file is one Spark partition."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, part in rows.groupby(list(key_cols), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        name = "_".join(f"{c}-{v}" for c, v in zip(key_cols, key)) + ".csv.gz"
        path = out / name
        tmp = path.with_suffix(".tmp")
        with gzip.open(tmp, "wt", compresslevel=5) as fh:
            part.to_csv(fh, index=False)
        tmp.replace(path)  # no half-written file keeps the final name
        paths.append(path)
    return paths


PARQUET_ROW_GROUP_ROWS = 131_072


def write_parquet(rows: pd.DataFrame, out_dir: str | Path, partition_cols=None) -> Path:
    """Layout (b): Parquet with the group key columns (optionally partitioned by some of them).

    Row groups of at most ``PARQUET_ROW_GROUP_ROWS`` rows: Spark splits a scan at row-group
    boundaries only, so one big row group would be read (and shuffled) by a single task on one core.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(out / "part-0.parquet" if not partition_cols else out, index=False,
                    partition_cols=partition_cols, row_group_size=PARQUET_ROW_GROUP_ROWS)
    return out


