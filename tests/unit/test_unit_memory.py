"""Memory guard estimates and messages, without Spark."""
import pandas as pd
import pytest

from manymodels.core.memory import check_group_memory, human, row_bytes, sample_fractions
from manymodels.errors import InputError

DTYPES = {"store": "bigint", "item": "string", "x0": "double", "x1": "float", "y": "double"}


def sizes(counts):
    return pd.DataFrame({"store": range(len(counts)), "item": [f"i{i}" for i in range(len(counts))],
                         "count": counts})


def test_row_bytes_follow_column_types():
    base = row_bytes(DTYPES, ["store", "item"], ["x0", "x1"], "y")
    assert base == 2 * (8 + 56 + 8 + 4 + 8) + 8 * 3 * 3
    assert row_bytes(DTYPES, ["store", "item"], ["x0", "x1", "x0"], "y") > base  # more features, more bytes


def test_refuse_names_the_largest_groups_their_rows_bytes_and_the_settings():
    with pytest.raises(InputError) as err:
        check_group_memory(sizes([10, 5000, 20, 4000, 3000, 2500]), ["store", "item"], 100, 200_000, "refuse")
    msg = str(err.value)
    assert msg.startswith("4 group(s) too large")
    assert "store=1, item=i1 (5,000 rows, ~488.3 KiB)" in msg and "and 1 more" in msg
    assert "max_group_bytes=200,000" in msg and "at most 2,000 rows" in msg and "oversize='subsample'" in msg


def test_subsample_returns_fractions_and_fitting_groups_pass():
    over = check_group_memory(sizes([10, 5000, 20]), ["store", "item"], 100, 200_000, "subsample")
    frac = sample_fractions(over, ["store", "item"])
    assert frac["store"].tolist() == [1] and frac["_mm_fraction"].tolist() == [0.4]
    assert check_group_memory(sizes([10, 20]), ["store", "item"], 100, 200_000, "refuse").empty


@pytest.mark.parametrize("policy,limit,needle", [("drop", 10, "oversize='drop'"), ("refuse", 0, "max_group_bytes=0")])
def test_bad_settings(policy, limit, needle):
    with pytest.raises(InputError, match=needle):
        check_group_memory(sizes([1]), ["store", "item"], 100, limit, policy)


def test_human_sizes():
    assert (human(512), human(2048), human(3 * 1024 ** 3)) == ("512 B", "2.0 KiB", "3.0 GiB")
