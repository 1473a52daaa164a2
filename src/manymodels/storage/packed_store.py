"""The packed model store: every group's model bytes in one Parquet file (``models.parquet``), in row groups of
``ROW_GROUP`` models, plus the index beside it (``storage.model_index``).

``PackedModels`` writes both and computes the checksums; a reader takes the index (whose SHA-256 the registered
version records) and reads only the row groups that hold the models it needs, checking each blob against the
index, never against the file that holds it."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from manymodels.core.keys import canonical_key, key_text
from manymodels.core.model_bytes import DEFAULT_POLICY, LoadPolicy, ModelIntegrityError, sha256
from manymodels.core.routing import REFUSED
from manymodels.storage import model_index
from manymodels.storage.model_index import INDEX_FILE

POLICY_KEY = model_index.POLICY_KEY


MODELS_FILE = "models.parquet"


ROW_GROUP = 512


class PackedModels:
    """Writer of the router's ``models.parquet`` (one row group per ``ROW_GROUP`` rows) and of its index
    (``model_index.INDEX_FILE``), fed model-table batches.

    Every model's SHA-256 is computed here from its bytes. With ``expected`` (canonical key -> ``(status,
    model SHA-256, model format)``, the index the training run captured when it wrote its table) every row must
    match it and every expected group must come: a model table edited after training (a blob and its checksum
    changed together, say) is refused with ``ModelIntegrityError`` naming the group, before anything is logged.
    """

    SCHEMA_COLUMNS = ("key", "status", "error", "model_sha256", "library_versions", "model_format", "model")

    def __init__(self, folder: Path, policy: LoadPolicy | None = None, *, expected: dict | None = None,
                 strict: bool = True, meta: dict | None = None, where: str = ""):
        """``policy``: the training run's ``LoadPolicy`` (``LoadPolicy.of(spec)``), stored with the index.
        ``strict=False`` (a store staged for scoring) does not raise for a group that differs from ``expected``:
        its index entry is ``refused`` with the reason, and only that group goes unscored."""
        self.policy = policy or DEFAULT_POLICY
        self.path = Path(folder) / MODELS_FILE
        self.index_path = Path(folder) / INDEX_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.expected = None if expected is None else dict(expected)
        self.strict, self.meta, self.where = strict, dict(meta or {}), where
        self.index: dict[str, list] = {name: [] for name in model_index.INDEX_COLUMNS}
        self.index_sha256 = ""
        self.digest = ""
        self._pending: list[pd.DataFrame] = []
        self._n_pending = 0
        self._writer = None

    def __enter__(self):
        return self

    def add(self, batch: pd.DataFrame, key_cols) -> None:
        keys = [canonical_key(k) for k in batch[list(key_cols)].itertuples(index=False, name=None)]
        frame = batch.loc[:, ["status", "error", "library_versions", "model"]].assign(key=[list(k) for k in keys])
        # the format each row was written in; a batch without the column is all in the run's format
        formats = batch["model_format"] if "model_format" in batch else pd.Series(None, index=batch.index)
        frame["model_format"] = formats.fillna(self.policy.model_format).to_numpy()
        blobs = frame["model"].tolist()
        frame["model_sha256"] = [sha256(bytes(b)) if isinstance(b, (bytes, bytearray, memoryview)) else None
                                 for b in blobs]
        # the index, column by column (no object per group): only ok rows have a checksum, format and size
        ok = (frame["status"] == "ok").tolist()
        status, error = frame["status"].tolist(), frame["error"].tolist()
        shas = [sha if good else None for sha, good in zip(frame["model_sha256"].tolist(), ok)]
        fmts = [fmt if good else None for fmt, good in zip(frame["model_format"].tolist(), ok)]
        if self.expected is not None:
            for i, key in enumerate(keys):
                refusal = self._check(key, key_cols, (status[i], shas[i], fmts[i]))
                if refusal:
                    status[i], error[i] = REFUSED, refusal
        start = len(self.index["key"])
        positions = range(start, start + len(keys))
        for name, values in (("key", keys), ("status", status), ("error", error), ("model_sha256", shas),
                             ("library_versions", frame["library_versions"].tolist()), ("model_format", fmts),
                             ("size", [len(b) if good and b is not None else 0 for b, good in zip(blobs, ok)]),
                             ("row_group", [p // ROW_GROUP for p in positions]),
                             ("row", [p % ROW_GROUP for p in positions])):
            self.index[name].extend(values)
        self._pending.append(frame.loc[:, list(self.SCHEMA_COLUMNS)])
        self._n_pending += len(frame)
        while self._n_pending >= ROW_GROUP:
            self._flush(ROW_GROUP)

    def _check(self, key, key_cols, got: tuple) -> str | None:
        """None when ``(status, SHA-256, format)`` is what the training run wrote for ``key`` (``expected``); else
        the refusal of the group (raised when ``strict``)."""
        want = self.expected.pop(key, None)
        if want is not None and tuple(want) == got:
            return None
        where = f"group {key_text(tuple(key_cols), key)} of {self.where or 'this training run'}"
        found = "is not one of the groups it wrote" if want is None else \
            f"has (status, SHA-256, format) {got} but the training run wrote {tuple(want)}"
        if self.strict:
            raise ModelIntegrityError(f"Refusing to log {where}: the model table {found}. It was changed after "
                                      "training; train again (a new training_run_id) or restore the table.")
        return (f"ModelIntegrityError: Refusing to load model {where}: the model table {found}. It was changed "
                "after training; retrain the group or restore the original model table.")

    def _flush(self, n: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pending = pd.concat(self._pending, ignore_index=True)
        head, rest = pending.iloc[:n], pending.iloc[n:]
        table = pa.Table.from_pandas(head, preserve_index=False, schema=_packed_schema(self.policy))
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema)
        self._writer.write_table(table, row_group_size=n)
        self._pending, self._n_pending = ([rest] if len(rest) else []), len(rest)

    def __exit__(self, exc_type, *exc) -> None:
        import pyarrow.parquet as pq

        if self._n_pending and exc_type is None:
            self._flush(self._n_pending)
        if self._writer is None:  # no groups at all: an empty file with the schema
            pq.write_table(_packed_schema(self.policy).empty_table(), self.path)
        else:
            self._writer.close()
        if exc_type is not None:
            return
        if self.expected and self.strict:  # groups the training run wrote that the table no longer has
            key = next(iter(self.expected))
            raise ModelIntegrityError(
                f"Refusing to log {self.where or 'the model table'}: group {key} was written by the training run "
                f"but is missing from its table ({len(self.expected)} group(s) missing). Restore the table or train "
                "again.")
        meta = {**self.meta, "models_sha256": model_index.file_sha256(self.path),
                "models_bytes": self.path.stat().st_size}
        self.index_sha256, self.digest = model_index.write(self.index_path, self.index, self.policy, meta)


def _packed_schema(policy: LoadPolicy = DEFAULT_POLICY):
    import pyarrow as pa

    return pa.schema([("key", pa.list_(pa.string())), ("status", pa.string()), ("error", pa.string()),
                      ("model_sha256", pa.string()), ("library_versions", pa.string()),
                      ("model_format", pa.string()), ("model", pa.binary())],
                     metadata={POLICY_KEY: policy.to_json().encode()})


def read_policy(path: str | Path) -> LoadPolicy:
    """The ``LoadPolicy`` stored with a packed store (stores written before it had one: pickle5)."""
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).schema_arrow.metadata or {}
    return LoadPolicy.from_json(metadata.get(POLICY_KEY))


def read_index(path: str | Path) -> dict:
    """Canonical key -> entry with the row group and row of its model in ``models.parquet``."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    columns = ["key", "status", "error", "model_sha256", "library_versions"]
    columns += ["model_format"] if "model_format" in pf.schema_arrow.names else []  # older stores: all pickle5
    index = {}
    for rg in range(pf.num_row_groups):
        frame = pf.read_row_group(rg, columns=columns).to_pandas()
        for row, rec in enumerate(frame.to_dict("records")):
            rec.update(row_group=rg, row=row)
            index[tuple(rec.pop("key"))] = rec
    return index


def load_index(folder: str | Path, expected_sha256: str | None = None, *, what: str = "") -> model_index.ModelIndex:
    """The index of the packed store in ``folder``: its ``index.parquet`` (checked against ``expected_sha256`` when
    given); a store registered before it had one reads its index and policy from ``models.parquet`` itself."""
    folder = Path(folder)
    if (folder / INDEX_FILE).exists():
        return model_index.read(folder / INDEX_FILE, expected_sha256, what=what)
    if expected_sha256:
        raise ModelIntegrityError(f"the index of {what or folder} is missing from {folder}: stage the version again.")
    return model_index.ModelIndex(read_index(folder / MODELS_FILE), read_policy(folder / MODELS_FILE))


def read_blobs(path: str | Path, entries: list[dict]) -> dict[str, bytes]:
    """Model bytes of ``entries``, reading each needed row group once."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    out = {}
    for rg in sorted({e["row_group"] for e in entries}):
        column = pf.read_row_group(rg, columns=["model"]).column("model")
        for e in entries:
            if e["row_group"] == rg:
                out[e["model_sha256"]] = column[e["row"]].as_py()
    return out

