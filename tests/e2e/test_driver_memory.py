"""Bounded driver memory (issue 7): the model table reaches the driver in batches, never whole.

No timing: the streaming is checked by batch sizes and by measured peaks. ``_stream_models`` (the body
of ``tracking.log_training``) runs in a fresh process over a fake committed model table of N and of 2N
groups (16 KB blobs, Parquet files of one row group each, as Spark writes them); the peak of Python
allocations (tracemalloc) plus Arrow's pool (``max_memory``) must not grow with the blob bytes of the
extra N groups. Collecting the table (a ``toPandas``, a whole-file read, a list of every batch) makes the
peak grow by at least those bytes and fails the test.
"""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from manymodels.core.schema import FIXED_COLUMNS, METRIC_COLUMNS
from manymodels.storage import model_table

KEYS = ("store", "item")
BLOB = 16 * 1024
SMALL_BATCH = 64  # model_table.BATCH_ROWS and packed_store.ROW_GROUP in the measured process


def write_model_table(folder, n_groups: int, n_files: int = 2, blob: int = BLOB, seed: int = 0) -> dict:
    """A committed-looking model-table version (every column of ``schemas.FIXED_COLUMNS``): ``n_files``
    Parquet files of one row group each, every tenth group failed (no model). Returns the expected keys
    (in file order) and the number of ok groups."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    ids = np.arange(n_groups)
    status = np.where(ids % 10 == 3, "failed", "ok")
    frame = pd.DataFrame({"store": ids // 100, "item": ids % 100})
    for name, _, dtype in FIXED_COLUMNS:
        frame[name] = pd.Series([None] * n_groups, dtype="object") if dtype == "object" else \
            pd.Series(np.zeros(n_groups), dtype=dtype)
    frame["status"] = status
    frame["error"] = np.where(status == "ok", None, "ValueError: bad group")
    frame["n_rows"] = 200
    for c in METRIC_COLUMNS:
        frame[c] = rng.random(n_groups)
    frame["model"] = [rng.bytes(blob) if s == "ok" else None for s in status]
    frame["model_sha256"] = [f"{i:064x}" for i in ids]
    frame["model_format"] = "pickle5"
    frame["library_versions"] = '{"numpy": "x", "scikit-learn": "y"}'
    frame["task_attempt"] = "0.0"
    (folder / "_SUCCESS").write_text("")
    for i, part in enumerate(np.array_split(frame, n_files)):  # one row group per file, pages of ~1 MB or less
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), folder / f"part-{i:05d}.parquet",
                       row_group_size=len(part) + 1, use_dictionary=False, write_batch_size=16)
    return {"keys": list(zip(frame["store"], frame["item"])), "ok": int((status == "ok").sum())}


def spec():
    from sklearn.linear_model import LinearRegression

    from manymodels.core.spec import TrainSpec

    return TrainSpec(group_cols=KEYS, feature_cols=("x0",), label_col="y", estimator=LinearRegression())


def fake_table(version):
    return SimpleNamespace(version=str(version), spec=spec())


def test_iter_model_table_yields_small_batches_in_order(tmp_path, monkeypatch):
    expected = write_model_table(tmp_path / "v1", 750, n_files=3, blob=64)
    monkeypatch.setattr(model_table, "BATCH_ROWS", 100)
    batches = list(model_table.iter_model_table(None, fake_table(tmp_path / "v1"), ["store", "item", "model"]))
    sizes = [len(b) for b in batches]
    assert max(sizes) <= 100 and sum(sizes) == 750 and len(batches) >= 8
    keys = [k for b in batches for k in zip(b["store"], b["item"])]
    assert keys == expected["keys"]
    assert all(isinstance(m, bytes) and len(m) == 64 for b in batches for m in b["model"].dropna())


MEASURE = r"""
import json, sys, tracemalloc
from pathlib import Path
from types import SimpleNamespace
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.linear_model import LinearRegression
from manymodels.core.spec import TrainSpec
from manymodels.storage import model_table, packed_store
from manymodels.tracking import runs

version, out, batch = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
model_table.BATCH_ROWS = batch
packed_store.ROW_GROUP = batch
table = SimpleNamespace(version=version, spec=TrainSpec(group_cols=("store", "item"), feature_cols=("x0",),
                                                        label_col="y", estimator=LinearRegression()),
                        extra={}, training_run_id="memory", expected_index=lambda spark: None)
pool_before = pa.default_memory_pool().max_memory()
tracemalloc.start()
metrics, _ = runs._stream_models(None, table, out)
python_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
packed = pq.ParquetFile(out / "router" / "models.parquet")
print(json.dumps({"python_peak": python_peak, "arrow_peak": pa.default_memory_pool().max_memory(),
                  "arrow_before": pool_before, "metrics_rows": len(metrics),
                  "metrics_has_model": "model" in metrics.columns,
                  "files": sum(1 for p in (out / "models").rglob("*") if p.is_file()),
                  "packed_rows": packed.metadata.num_rows, "packed_row_groups": packed.num_row_groups}))
"""


def measure_stream_models(version, out) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(version), str(out), str(SMALL_BATCH)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_log_training_streams_blobs_peak_does_not_grow_with_groups(tmp_path):
    n = 1500
    runs = {}
    for groups in (n, 2 * n):
        expected = write_model_table(tmp_path / f"v{groups}", groups, seed=groups)
        got = measure_stream_models(tmp_path / f"v{groups}", tmp_path / f"out{groups}")
        # everything was written: one file per ok group, every group in the metrics and the packed store
        assert got["files"] == expected["ok"] and got["metrics_rows"] == groups and not got["metrics_has_model"]
        assert got["packed_rows"] == groups and got["packed_row_groups"] == -(-groups // SMALL_BATCH)
        got["blob_bytes"] = expected["ok"] * BLOB
        got["peak"] = got["python_peak"] + got["arrow_peak"]
        runs[groups] = got
    small, large = runs[n], runs[2 * n]
    extra_blobs = large["blob_bytes"] - small["blob_bytes"]  # ~21 MB more model bytes
    # A streamed table holds a few batches of SMALL_BATCH blobs (~1 MB each) at a time, whatever its size:
    assert large["peak"] < 0.5 * large["blob_bytes"], runs
    # ... and doubling the groups adds per-group metadata only (keys, metrics: well under 1 KB per group).
    assert large["peak"] - small["peak"] < 0.25 * extra_blobs, runs
    assert large["python_peak"] - small["python_peak"] < 0.25 * extra_blobs, runs
    assert large["arrow_peak"] - small["arrow_peak"] < 0.25 * extra_blobs, runs


@pytest.mark.spark
def test_iter_model_table_through_spark_yields_small_batches(spark, tmp_path, monkeypatch):
    """A model table read through Spark (a metastore/Unity Catalog table) comes in batches too."""
    write_model_table(tmp_path / "v1", 500, n_files=1, blob=32)
    view = "mm_driver_memory_table"
    spark.read.parquet(str(tmp_path / "v1")).createOrReplaceGlobalTempView(view)
    table = SimpleNamespace(version=f"global_temp.{view}", spec=spec(),
                            read=lambda s: s.read.table(f"global_temp.{view}"))
    monkeypatch.setattr(model_table, "BATCH_ROWS", 64)
    sizes = [len(b) for b in model_table.iter_model_table(spark, table, ["store", "item", "status", "model"])]
    assert max(sizes) <= 64 and sum(sizes) == 500
