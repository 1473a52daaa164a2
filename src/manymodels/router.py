"""The registered router model's store and routing: one MLflow pyfunc per training run (``router_pyfunc.GroupRouter``)
predicts each row with its group's model; this module, which never imports mlflow, does the work for it and for
the Python workers of ``inference.score_per_group``.

Its artifacts are two Parquet files: ``models.parquet`` (canonical key, status, error, SHA-256, library
versions, model format, model bytes) written in row groups of ``ROW_GROUP`` models, so that logging copies
one file however many groups there are, and its index (``model_index``: key, SHA-256, format, size and the
position of every model, with the training run's ``serialization.LoadPolicy`` in its metadata), the one
authority on checksums, formats and policy. ``load_context`` reads the index; the first batch that needs a
group's model reads its row group, checks the SHA-256 the index records (and, for skops, the trusted types)
and deserializes it into the process-wide ``MODEL_CACHE``: each model is loaded once per process.

Output columns: the key columns, ``prediction``, ``status`` (``ok``, ``unknown_group``, the group's
training status, ``refused``: its stored model failed the checksum or the trusted types and was not
loaded, or ``predict_failed``: the model raised on that row; the other rows and groups still score) and
``error`` (naming the key, the run and the reason when there is no prediction).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from manymodels.fitting import batch_settings
from manymodels.keys import canonical_key, key_text
from manymodels import model_index
from manymodels.model_index import INDEX_FILE
from manymodels.serialization import (DEFAULT_POLICY, MODEL_CACHE, MODEL_FORMAT, LoadPolicy, ModelIntegrityError,
                                     ModelRefusedError, sha256)

UNKNOWN_GROUP = "unknown_group"
REFUSED = "refused"  # the stored model failed its checksum or trusted-types check: not loaded, not used
PREDICT_FAILED = "predict_failed"  # the model raised on this row (a NaN its estimator refuses, say)
ISOLATE_ROWS = 16  # failing rows bisected out per predict call before the rest of a failing range is given up
POLICY_KEY = model_index.POLICY_KEY
MODELS_FILE = "models.parquet"
ROW_GROUP = 512


def route_predict(df: pd.DataFrame, *, key_cols, feature_cols, index: dict, load_blobs, run_label: str = "",
                  pass_dataframe: bool = False, with_proba: bool = False,
                  policy: LoadPolicy | None = None, refuse_all: str | None = None) -> pd.DataFrame:
    """Predict every row of ``df`` with its group's model.

    Pure: ``index`` maps a canonical key to its entry (status, error, model_sha256, library_versions, ...);
    ``load_blobs(entries) -> {sha: bytes}`` fetches the models not yet in ``MODEL_CACHE``, once per batch (and
    again for a model the bounded cache dropped while this batch was being scored).
    Models see the features as training gave them: a float matrix, or a DataFrame with ``pass_dataframe``.
    ``with_proba`` adds ``probabilities`` (class -> probability) for classifiers. ``policy`` (the training
    run's format and trusted types) decides what may be deserialized; a group whose model is refused
    (checksum mismatch, untrusted types) gets ``status="refused"`` and the reason, naming group and run.
    One ``predict`` call per group; when it raises, the group's rows are bisected (``predict_isolated``) so
    the rows that can be predicted are, and the others get a null prediction, ``status="predict_failed"``
    and the exception, naming group and run. ``refuse_all``: why no model of this version may be loaded (its
    index failed its check); every row is then ``refused`` with the reason, naming its group.
    """
    n = len(df)
    prediction = np.full(n, np.nan, dtype=object)
    status = np.full(n, "ok", dtype=object)
    error = np.full(n, None, dtype=object)
    proba = np.full(n, None, dtype=object)
    X_all = df.loc[:, list(feature_cols)]
    if not pass_dataframe:
        X_all = X_all.to_numpy(dtype="float64", na_value=np.nan)
    groups = [(key, positions, index.get(canonical_key(key)))
              for key, positions in df.groupby(list(key_cols), sort=False, dropna=False).indices.items()]
    missing = [] if refuse_all else [e for _, _, e in groups if e is not None and e["status"] == "ok" and
                                      (e["model_sha256"], _format(e)) not in MODEL_CACHE]
    blobs = load_blobs(missing) if missing else {}
    with batch_settings(X_all):  # one NaN/inf scan for the batch instead of one per group's predict
        for key, positions, entry in groups:
            where = key_text(tuple(key_cols), key)
            if refuse_all:  # the index itself failed its check: nothing of this version is loaded
                status[positions] = REFUSED
                error[positions] = (f"ModelIntegrityError: Refusing to load model group {where} of {run_label}: "
                                    f"{refuse_all}")
                continue
            if entry is None:
                status[positions] = UNKNOWN_GROUP
                error[positions] = f"no model for group {where} in {run_label or 'this training run'}"
                continue
            if entry["status"] == REFUSED:  # refused when its store was packed: the entry says why
                status[positions] = REFUSED
                error[positions] = entry["error"]
                continue
            if entry["status"] != "ok":
                status[positions] = entry["status"]
                error[positions] = f"group {where} has no model: {entry['status']} in training ({entry['error']})"
                continue
            sha = entry["model_sha256"]
            try:
                model = MODEL_CACHE.get(lambda: blobs[sha] if sha in blobs else load_blobs([entry])[sha], sha,
                                        where=f"group {where} of {run_label}",
                                        versions=entry["library_versions"],
                                        model_format=_format(entry), policy=policy)
            except ModelRefusedError as exc:  # this group only: its rows say why, the others still score
                status[positions] = REFUSED
                error[positions] = f"{type(exc).__name__}: {exc}"
                continue
            X = X_all.iloc[positions] if pass_dataframe else X_all[positions]
            call = partial(_predict_rows, model, X, with_proba=with_proba)
            for start, stop, result, exc in predict_isolated(call, len(positions)):
                rows = positions[start:stop]
                if exc is None:
                    prediction[rows], proba[rows] = result
                else:
                    status[rows] = PREDICT_FAILED
                    error[rows] = predict_error(f"group {where} of {run_label or 'this training run'}", exc,
                                                stop - start)
    out = df.loc[:, list(key_cols)].reset_index(drop=True)
    try:  # numeric predictions (regression, integer classes) as float; class labels stay as they are
        out["prediction"] = pd.Series(prediction) if with_proba else pd.to_numeric(pd.Series(prediction))
    except (ValueError, TypeError):
        out["prediction"] = pd.Series(prediction)
    if with_proba:
        out["probabilities"] = proba
    out["status"] = status
    out["error"] = error
    return out


def _format(entry: dict) -> str:
    return entry.get("model_format") or MODEL_FORMAT


def rows_of(X, start: int, stop: int):
    """Rows ``start:stop`` of a feature matrix or DataFrame."""
    return X.iloc[start:stop] if isinstance(X, pd.DataFrame) else X[start:stop]


def _predict_rows(model, X, start: int, stop: int, *, with_proba: bool):
    """``(predictions, probability dicts or None)`` of rows ``start:stop`` of ``X``."""
    X = rows_of(X, start, stop)
    if with_proba and hasattr(model, "predict_proba"):
        p = model.predict_proba(X)
        classes = [str(c) for c in model.classes_]
        pred = np.asarray(model.classes_, dtype=object)[p.argmax(axis=1)]
        return pred, [dict(zip(classes, row)) for row in p.tolist()]
    pred = model.predict(X)
    if len(pred) != stop - start:  # would misalign rows when written back
        raise ValueError(f"predict returned {len(pred)} values for {stop - start} rows")
    return pred, None


def predict_isolated(call, n: int, *, isolate_rows: int | None = None) -> list[tuple]:
    """Run ``call(start, stop)`` over rows ``0:n``; when it raises, bisect to isolate the failing rows.

    Returns ``(start, stop, result, exception)`` ranges covering ``0:n`` (unordered); ``exception`` is None
    where ``call`` succeeded. The first call covers every row (the usual, only, cost); each failing range is
    retried in halves, so ``k`` failing rows cost about ``2 k log2(n)`` calls. The retries are capped at what
    isolating ``isolate_rows`` rows takes (default ``ISOLATE_ROWS``); past it the remaining failing ranges are
    reported whole, so a model that fails on every row costs O(log n) calls, not one per row.
    """
    try:
        return [(0, n, call(0, n), None)]
    except Exception as exc:  # noqa: BLE001 - one row's failure must not lose the others
        failing = [(0, n, exc)]
    budget = 2 * (isolate_rows or ISOLATE_ROWS) * (int(np.log2(max(n, 1))) + 1)
    done = []
    while failing:
        start, stop, exc = failing.pop()
        if stop - start == 1 or budget <= 0:
            done.append((start, stop, None, exc))
            continue
        mid = (start + stop) // 2
        for a, b in ((start, mid), (mid, stop)):
            budget -= 1
            try:
                done.append((a, b, call(a, b), None))
            except Exception as part_exc:  # noqa: BLE001
                failing.append((a, b, part_exc))
    return done


def predict_error(what: str, exc: BaseException, n_rows: int) -> str:
    """The error of rows whose ``predict`` raised: what failed, the exception, and whether the row was isolated."""
    text = f"predict failed for {what}: {type(exc).__name__}: {str(exc)[:500]}"
    if n_rows > 1:
        text += (f" (raised for a range of {n_rows} rows not isolated further: more failing rows than the "
                 "retry budget; clean or impute the bad rows)")
    return text


def class_labels(prediction: pd.Series) -> pd.Series:
    """Predicted classes as text, missing ones as None (not NaN): the string column the signatures promise, even
    when no row of a batch got a prediction."""
    return prediction.map(lambda v: None if v is None or v != v else str(v)).astype(object)


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


def __getattr__(name: str):
    """``GroupRouter`` lives in ``router_pyfunc`` (it subclasses MLflow's ``PythonModel``), so that the Python
    workers that score with the packed store never import mlflow: its ~140,000 objects made every task's
    garbage collection several times longer. Routers registered before the move pickled the class as
    ``manymodels.router.GroupRouter`` and still load through this name."""
    if name == "GroupRouter":
        from manymodels.router_pyfunc import GroupRouter

        return GroupRouter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
