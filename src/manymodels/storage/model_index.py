"""The index of a training run's models: the one authority on what a version serves (pure: pyarrow, no Spark).

One row per group: canonical key, status, error, the model's SHA-256, its format, its size in bytes, the library
versions it was trained with, and where its bytes are in the packed store (``models.parquet``: row group, row).
The file's metadata holds the training run's ``model_bytes.LoadPolicy``, the SHA-256 and size of the packed
store it describes, the ``digest`` of its content and what the router needs to score (key and feature columns,
task, training run).

It is written once, next to the packed store, when a training run is logged (``packed_store.PackedModels``), and is
registered with the router: the model version's own artifacts hold it, and the version's tags hold its SHA-256.
Every load path takes the expected checksum, the format and the load policy from an index, never from the table
or file that holds the blobs: editing a blob and its checksum together in a model table, in ``models.parquet``
or in a staged copy is detected, and editing a format or the policy there changes nothing.

What this protects against: accidental corruption, and a model table, Volume or staging folder edited by someone
without rights on the registry. What it does not: someone who can write the registry's artifacts and tags.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from manymodels.core.model_bytes import DEFAULT_POLICY, LoadPolicy, ModelIntegrityError

INDEX_FILE = "index.parquet"
POLICY_KEY = b"manymodels.load_policy"
META_KEY = b"manymodels.index"
CHUNK = 1 << 20
INDEX_COLUMNS = ("key", "status", "error", "model_sha256", "library_versions", "model_format", "size", "row_group",
                 "row")


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_digest(rows: Iterable[tuple]) -> str:
    """SHA-256 of a run's models, independent of row order and file layout: ``rows`` are
    ``(canonical key, status, model SHA-256, model format)``; two stores with one digest serve the same models."""
    digest = hashlib.sha256()
    for row in sorted(json.dumps([list(k), s, sha, fmt]) for k, s, sha, fmt in rows):
        digest.update(row.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def run_fingerprint(rows: Iterable[tuple]) -> str:
    """SHA-256 (first 32 hex digits) of what decides a training run's models: ``rows`` are ``(canonical key, data
    fingerprint, spec fingerprint)`` per group. Two runs with one fingerprint trained the same groups on the same
    rows with the same settings; ``tracking.log_training`` refuses to register a training run id again under a
    different one."""
    digest = hashlib.sha256()
    for row in sorted(json.dumps([list(k), d or "", s or ""]) for k, d, s in rows):
        digest.update(row.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:32]


@dataclass
class ModelIndex:
    """A read index: ``entries`` (canonical key -> entry dict), the load policy and the metadata."""

    entries: dict
    policy: LoadPolicy = DEFAULT_POLICY
    meta: dict = field(default_factory=dict)
    sha256: str = ""  # of the index file

    @property
    def digest(self) -> str:
        return self.meta.get("digest", "")


def _schema(policy: LoadPolicy, meta: dict):
    import pyarrow as pa

    return pa.schema([("key", pa.list_(pa.string())), ("status", pa.string()), ("error", pa.string()),
                      ("model_sha256", pa.string()), ("library_versions", pa.string()),
                      ("model_format", pa.string()), ("size", pa.int64()), ("row_group", pa.int32()),
                      ("row", pa.int32())],
                     metadata={POLICY_KEY: policy.to_json().encode(), META_KEY: json.dumps(meta).encode()})


def write(path: str | Path, columns: dict[str, list], policy: LoadPolicy, meta: dict) -> tuple[str, str]:
    """Write the index file from its ``columns`` (``INDEX_COLUMNS``, one value per group); return its SHA-256 and
    the content digest (also in ``meta``, with the number of groups)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    digest = content_digest(zip(columns["key"], columns["status"], columns["model_sha256"], columns["model_format"]))
    meta = {**meta, "digest": digest, "n_groups": len(columns["key"])}
    schema = _schema(policy, meta)
    data = {**columns, "key": [list(k) for k in columns["key"]]}
    pq.write_table(pa.Table.from_pydict({name: data[name] for name in schema.names}, schema=schema), path)
    return file_sha256(path), digest


def read(path: str | Path, expected_sha256: str | None = None, *, what: str = "") -> ModelIndex:
    """The index at ``path``; with ``expected_sha256`` its bytes are checked first (``ModelIntegrityError``
    naming ``what`` when they differ)."""
    import pyarrow.parquet as pq

    sha = file_sha256(path)
    if expected_sha256 and sha != expected_sha256:
        raise ModelIntegrityError(
            f"the index of {what or path} has SHA-256 {sha} but {expected_sha256} was registered: it was changed "
            "after registration. Stage the version again (delete the staged copy) or restore it.")
    table = pq.read_table(path)
    metadata = table.schema.metadata or {}
    entries = {}
    for rec in table.to_pylist():
        entries[tuple(rec.pop("key"))] = rec
    return ModelIndex(entries, LoadPolicy.from_json(metadata.get(POLICY_KEY)),
                      json.loads(metadata.get(META_KEY) or b"{}"), sha)
