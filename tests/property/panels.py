"""Strategies of the property tier: group keys of every Spark atomic type, column names a user might send, and
small panels of messy values, as plain data whose ``repr`` pastes into a regression test."""
from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pandas as pd
from hypothesis import strategies as st

SCALE = 10 if os.environ.get("MM_HYPOTHESIS_PROFILE", "ci") == "deep" else 1


def examples(n: int) -> int:
    """The example budget of a property: n in CI, ten times n under ``make test-deep``."""
    return n * SCALE


# ---------------------------------------------------------------- key values by Spark type

SPECIAL_TEXT = ["", "x" * 1000, "/", "\\", "=", "..", ".", "%", "%2F", "'", '"', "`", "\n", "\t", "a b", "A", "a",
                "ünïcödé", "日本語", "😀" * 5, "ℌ𝔢𝔩𝔩𝔬", "\u200b", "CON", "-1"]
# Text of every script (all categories but surrogates, which no Java string holds).
TEXT = st.one_of(st.sampled_from(SPECIAL_TEXT), st.text(st.characters(exclude_categories=("Cs",)), max_size=40))
# pandas (and so Spark's pandas UDFs) holds timestamps as datetime64[ns]: years 1678 to 2261.
TIMESTAMPS = st.datetimes(min_value=datetime.datetime(1678, 1, 1), max_value=datetime.datetime(2261, 12, 31))

KEY_VALUES = {
    "string": TEXT,
    "tinyint": st.integers(-128, 127),
    "smallint": st.integers(-(2 ** 15), 2 ** 15 - 1),
    "int": st.integers(-(2 ** 31), 2 ** 31 - 1),
    "bigint": st.one_of(st.sampled_from([-(2 ** 63), 2 ** 63 - 1, 0, -1]), st.integers(-(2 ** 63), 2 ** 63 - 1)),
    "boolean": st.booleans(),
    "float": st.one_of(st.sampled_from([0.0, -0.0, math.nan, 1e30, -1e30, 0.5]), st.floats(width=32)),
    "double": st.one_of(st.sampled_from([0.0, -0.0, math.nan, 1e300, -1e300, 3.0]), st.floats()),
    "decimal(12,2)": st.decimals(min_value=Decimal("-9999999999.99"), max_value=Decimal("9999999999.99"),
                                 places=2, allow_nan=False, allow_infinity=False)
                         .map(lambda d: d.quantize(Decimal("0.01"))),  # as a decimal(12,2) column holds it
    "date": st.dates(min_value=datetime.date(1, 1, 1), max_value=datetime.date(9999, 12, 31)),
    "timestamp": TIMESTAMPS,
    "timestamp_ntz": TIMESTAMPS,
    "binary": st.binary(max_size=24),
}
KEY_TYPES = tuple(KEY_VALUES)


def same_key(a, b) -> bool:
    """Spark's grouping equality: NaN equals NaN, -0.0 equals 0.0."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def distinct_keys(values: list) -> list:
    out = []
    for v in values:
        if not any(same_key(v, o) for o in out):
            out.append(v)
    return out


# ---------------------------------------------------------------- column names

# Names manymodels writes next to the keys, in several cases: allowed for features and labels, refused for keys.
OUTPUT_NAMES = ["status", "error", "prediction", "probabilities", "model", "model_version", "count", "n_rows",
                "params", "seed", "model_sha256", "training_run_id"]
ODD_NAMES = ["price.eur", "a b", "`tick`", "it's", 'say "hi"', "ünï", "日本", "1st", "9", "x.y.z", "a`b.c",
             "Status", "PREDICTION", "Error", "Model_Version", "COUNT"]
NAME = st.one_of(st.sampled_from(OUTPUT_NAMES + ODD_NAMES),
                 st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=12))


# ---------------------------------------------------------------- panels

@dataclass(frozen=True)
class Panel:
    """A small input: key columns of Spark types, float features, a label, and rows of plain Python values
    (keys..., features..., label)."""

    key_names: tuple
    key_types: tuple
    feature_names: tuple
    label_name: str
    label_type: str  # double (regression) or string / bigint (classification)
    rows: tuple

    def ddl(self) -> str:
        cols = [*zip(self.key_names, self.key_types), *((f, "double") for f in self.feature_names),
                (self.label_name, self.label_type)]
        return ", ".join(f"`{n.replace('`', '``')}` {t}" for n, t in cols)

    def frame(self, spark):
        return spark.createDataFrame([tuple(r) for r in self.rows], schema=self.ddl())

    def pandas(self) -> pd.DataFrame:
        return pd.DataFrame([list(r) for r in self.rows],
                            columns=[*self.key_names, *self.feature_names, self.label_name])

    @property
    def classification(self) -> bool:
        return self.label_type != "double"

    def groups(self) -> list:
        k = len(self.key_names)
        return distinct_keys([tuple(r[:k]) if k > 1 else r[0] for r in self.rows])


def _unique_names(draw, n: int, taken: set, strategy=NAME) -> list:
    out = []
    while len(out) < n:
        name = draw(strategy)
        if name.lower() not in taken:
            taken.add(name.lower())
            out.append(name)
    return out


FEATURE = st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.sampled_from([0.0, 1.0, -0.0]))


@st.composite
def panels(draw, *, key_types=KEY_TYPES, max_groups: int = 4, values: bool = True, inf: bool = False):
    """A panel of 1-3 key columns (types from ``key_types``), 1-3 features and a label. With ``values``, the
    messy cases: null and NaN features, null labels, constant features, 1-row groups, duplicate rows and (with
    ``inf``) infinities; classification labels may have one class in a group."""
    n_keys = draw(st.integers(1, 3))
    types = tuple(draw(st.sampled_from(key_types)) for _ in range(n_keys))
    taken: set = set()
    key_names = tuple(_unique_names(draw, n_keys, taken, st.one_of(st.sampled_from(ODD_NAMES[:11]), NAME)
                                    .filter(lambda s: s.lower() not in {n.lower() for n in OUTPUT_NAMES}
                                            and not s.lower().startswith("_mm_"))))
    feature_names = tuple(_unique_names(draw, draw(st.integers(1, 3)), taken,
                                        NAME.filter(lambda s: not s.lower().startswith("_mm_"))))
    label_name = _unique_names(draw, 1, taken, NAME.filter(lambda s: not s.lower().startswith("_mm_")))[0]
    label_type = draw(st.sampled_from(["double", "double", "string", "bigint"]))
    key_rows = distinct_keys(draw(st.lists(st.tuples(*[KEY_VALUES[t] for t in types]), min_size=1,
                                           max_size=max_groups)))
    rows = []
    for key in key_rows:
        n = draw(st.sampled_from([1, 3, 12, 12, 20]))
        constant = values and draw(st.booleans()) and draw(st.booleans())
        for _ in range(n):
            x = [0.0 if constant else draw(FEATURE) for _ in feature_names]
            if values and draw(st.integers(0, 19)) == 0:
                x[draw(st.integers(0, len(x) - 1))] = draw(st.sampled_from([None, math.nan]
                                                                            + ([math.inf, -math.inf] if inf else [])))
            rows.append((*key, *x, _label(draw, label_type, x, values)))
        if values and draw(st.integers(0, 4)) == 0:
            rows.append(rows[-1])  # a duplicate row
    order = draw(st.permutations(range(len(rows))))
    return Panel(key_names, types, feature_names, label_name, label_type, tuple(rows[i] for i in order))


def _label(draw, label_type: str, x: list, values: bool):
    if values and draw(st.integers(0, 24)) == 0:
        return None
    finite = [v for v in x if v is not None and math.isfinite(v)]
    signal = sum(finite) if finite else 0.0
    if label_type == "double":
        return float(signal + draw(st.floats(-1, 1)))
    cls = int(signal > 0) if draw(st.integers(0, 5)) else draw(st.integers(0, 2))
    return f"class {cls}" if label_type == "string" else cls


def as_numpy_key(values) -> tuple:
    return tuple(v.item() if isinstance(v, np.generic) else v for v in values)
