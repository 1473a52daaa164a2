import numpy as np
import pandas as pd

from manymodels.core.planning import BIN_COL, assign_bins, murmur3_int, partition_count, partition_labels, plan


def test_murmur3_matches_spark_reference_values():
    # Values from Spark SQL: SELECT hash(0), hash(1), hash(42), hash(-7)
    assert [murmur3_int(v) for v in (0, 1, 42, -7)] == [933211791, -559580957, 29417773, -1618159745]


def test_partition_labels_are_distinct_and_land_on_their_partition():
    for n in (1, 2, 7, 64):
        labels = partition_labels(n)
        assert len(set(labels)) == n
        assert [murmur3_int(v) % n for v in labels] == list(range(n))


def test_bin_packing_is_balanced_largest_first():
    counts = np.array([1000] + [10] * 200)
    sizes = pd.DataFrame({"k": range(len(counts)), "count": counts})
    bins = assign_bins(sizes, 4)
    loads = np.bincount(bins, weights=counts, minlength=4)
    assert loads.max() == 1000  # the giant group is alone: the other bins share the small ones
    assert loads[loads < 1000].max() - loads[loads < 1000].min() <= 10


def test_plan_caps_partitions_by_groups():
    sizes = pd.DataFrame({"k": [1, 2, 3], "count": [5, 5, 5]})
    assignment, n = plan(sizes, parallelism=8)
    assert n == 3 == partition_count(3, 8) and assignment[BIN_COL].nunique() == 3
