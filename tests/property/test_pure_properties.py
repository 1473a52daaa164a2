"""Properties of the pure core over generated keys, names and values (no Spark: at least 200 examples each)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from panels import KEY_TYPES, KEY_VALUES, NAME, OUTPUT_NAMES, distinct_keys, examples, panels, same_key
from sklearn.linear_model import LinearRegression, LogisticRegression

from manymodels.core.checks import check_columns
from manymodels.core.fitting import fit_packed
from manymodels.core.keys import canonical_key, key_path, key_text
from manymodels.core.packing import group_bounds
from manymodels.core.routing import route_predict
from manymodels.core.schema import FIXED_NAMES, SCORING_NAMES
from manymodels.core.spec import TrainSpec
from manymodels.errors import InputError

PATH_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-=~")
PANDAS_DTYPES = {"tinyint": "int8", "smallint": "int16", "int": "int32", "bigint": "int64", "boolean": "bool",
                 "float": "float32", "double": "float64", "timestamp": "datetime64[ns]",
                 "timestamp_ntz": "datetime64[ns]"}


def as_spark_gives_it(values: list, spark_type: str) -> pd.Series:
    """A key column as Spark's pandas UDFs hand it to Python."""
    dtype = PANDAS_DTYPES.get(spark_type, "object")
    return pd.Series(values, dtype=dtype)


@settings(max_examples=examples(200))
@given(data=st.data(), spark_type=st.sampled_from(KEY_TYPES))
def test_group_bounds_gives_one_run_per_key_and_keeps_its_value(data, spark_type):
    keys = distinct_keys(data.draw(st.lists(KEY_VALUES[spark_type], min_size=1, max_size=6)))
    if spark_type == "float":  # the float32 column holds the rounded value; equal float32s are one group
        keys = distinct_keys([float(np.float32(k)) for k in keys])
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=len(keys), max_size=len(keys)))
    column = as_spark_gives_it([k for k, n in zip(keys, sizes) for _ in range(n)], spark_type)
    bounds = group_bounds(pd.DataFrame({"k": column}), ("k",))
    assert [e - s for _, s, e in bounds] == sizes
    for (key,), expected in zip([b[0] for b in bounds], keys):
        if spark_type.startswith("timestamp"):
            assert isinstance(key, pd.Timestamp) and key == pd.Timestamp(expected)
        else:
            assert same_key(key, expected), (key, expected)


KEYS_OF_ANY_TYPE = st.sampled_from(KEY_TYPES).flatmap(lambda t: st.lists(KEY_VALUES[t], min_size=1, max_size=8))


@settings(max_examples=examples(300))
@given(names=st.lists(NAME, min_size=1, max_size=3, unique=True), values=KEYS_OF_ANY_TYPE)
def test_artifact_paths_are_safe_short_and_never_collide(names, values):
    keys = [tuple([v] * len(names)) for v in values]
    paths = {canonical_key(k): key_path(tuple(names), k) for k in keys}
    folded = {p.lower() for p in paths.values()}
    assert len(folded) == len(paths), "two keys share a path on a case-insensitive filesystem"
    for path in paths.values():
        parts = path.split("/")
        assert len(parts) == len(names)
        assert all(p not in ("", ".", "..") and len(p.encode()) <= 200 and not p.endswith(".") for p in parts), path
        assert all(ch in PATH_CHARS for p in parts for ch in p), path  # no %, which MLflow decodes on download
    assert paths == {canonical_key(k): key_path(tuple(names), k) for k in keys}  # deterministic


@settings(max_examples=examples(300))
@given(keys=st.lists(NAME, min_size=1, max_size=3), features=st.lists(NAME, min_size=1, max_size=3), label=NAME)
def test_column_names_are_accepted_or_refused_naming_the_column(keys, features, label):
    spec = TrainSpec(group_cols=keys, feature_cols=features, label_col=label, estimator=LinearRegression())
    columns = list(dict.fromkeys([*keys, *features, label]))
    dtypes = [(c, "double") for c in columns]
    reserved = {n.lower() for n in (*FIXED_NAMES, *SCORING_NAMES, "count")}
    roles = [*dict.fromkeys(keys), *dict.fromkeys(features), label]
    lowered = [c.lower() for c in dict.fromkeys(roles)]
    expected_refusal = (len(set(keys)) < len(keys) or len(set(features)) < len(features)
                        or set(features) & ({label} | set(keys))
                        or any(k.lower() in reserved for k in keys)
                        or any(c.lower().startswith("_mm_") for c in roles)
                        or len(set(lowered)) < len(lowered))
    try:
        check_columns(spec, dtypes)
    except InputError as exc:
        assert expected_refusal, f"refused valid names: {exc}"
        assert any(repr(c) in str(exc) or c in str(exc) for c in roles), str(exc)
        assert "Fix" in str(exc) or "fix" in str(exc) or "rename" in str(exc) or "drop" in str(exc), str(exc)
    else:
        assert not expected_refusal, f"accepted {keys}, {features}, {label}"


def _spec(panel, **kw) -> TrainSpec:
    estimator = LogisticRegression() if panel.classification else LinearRegression()
    return TrainSpec(group_cols=panel.key_names, feature_cols=panel.feature_names, label_col=panel.label_name,
                     estimator=estimator, min_rows=2, training_run_id="property", **kw)


def _sorted_like_spark(panel) -> pd.DataFrame:
    """The panel's rows with each group contiguous (as the packing pipeline gives them), keys typed as Spark's
    pandas UDFs type them."""
    frame = panel.pandas()
    frame["_g"] = [next(i for i, g in enumerate(panel.groups())
                        if same_key_tuple(g, tuple(r[:len(panel.key_names)]))) for r in panel.rows]
    frame = frame.sort_values("_g", kind="stable").drop(columns="_g").reset_index(drop=True)
    for name, spark_type in zip(panel.key_names, panel.key_types):
        frame[name] = as_spark_gives_it(list(frame[name]), spark_type)
    for f in panel.feature_names:
        frame[f] = frame[f].astype("float64")
    return frame


def same_key_tuple(a, b) -> bool:
    a = a if isinstance(a, tuple) else (a,)
    return all(same_key(x, y) for x, y in zip(a, b))


@settings(max_examples=examples(200))
@given(panel=panels(max_groups=4))
def test_pure_fit_gives_one_row_per_group_each_ok_or_explained(panel):
    table = fit_packed(_sorted_like_spark(panel), spec=_spec(panel))
    assert len(table) == len(panel.groups())
    for _, row in table.iterrows():
        key = tuple(row[c] for c in panel.key_names)
        assert row["status"] in ("ok", "failed", "skipped")
        if row["status"] == "ok":
            assert row["model"] is not None and row["model_sha256"]
        else:
            assert row["error"] and row["model"] is None
            assert key_text(panel.key_names, key) in row["error"], row["error"]


@settings(max_examples=examples(200))
@given(panel=panels(max_groups=4))
def test_routing_gives_one_row_per_input_row_each_ok_or_explained(panel):
    frame = _sorted_like_spark(panel)
    table = fit_packed(frame, spec=_spec(panel))
    index = {canonical_key(tuple(r[c] for c in panel.key_names)): dict(r, row_group=0, row=i)
             for i, (_, r) in enumerate(table.iterrows())}
    blobs = {r["model_sha256"]: r["model"] for _, r in table.iterrows() if r["status"] == "ok"}
    out = route_predict(frame, key_cols=panel.key_names, feature_cols=panel.feature_names, index=index,
                        load_blobs=lambda entries: {e["model_sha256"]: blobs[e["model_sha256"]] for e in entries},
                        run_label="property", with_proba=panel.classification)
    assert len(out) == len(frame)
    for (_, row), key in zip(out.iterrows(), frame[list(panel.key_names)].itertuples(index=False, name=None)):
        if row["status"] == "ok":
            assert row["error"] is None and not _missing(row["prediction"])
        else:
            assert row["error"] and key_text(panel.key_names, key) in row["error"], row["error"]


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def test_output_names_of_the_strategies_cover_the_model_table_and_the_scores():
    covered = {n.lower() for n in OUTPUT_NAMES}
    assert {"status", "error", "prediction", "probabilities", "model", "model_version", "count"} <= covered
    assert len(KEY_TYPES) == 13


@pytest.mark.parametrize("spark_type, value", [("timestamp", pd.Timestamp("2021-05-05 12:30:00")),
                                               ("double", math.nan), ("binary", b"\x00b")])
def test_regression_key_values_survive_group_bounds(spark_type, value):
    """Found by the tier: timestamps came back as integers (nanoseconds, read as microseconds: year 53,312), NaN
    keys split into one group per row, and binary keys had two texts (bytes and bytearray)."""
    column = as_spark_gives_it([value, value], spark_type)
    (key,), start, stop = group_bounds(pd.DataFrame({"k": column}), ("k",))[0]
    assert (start, stop) == (0, 2) and same_key(key, value)
    assert canonical_key(bytearray(b"\x00b")) == canonical_key(b"\x00b") == ("0x0062",)
