import gzip

import numpy as np
import pandas as pd

from manymodels.core.panel import make_panel, write_gzip_per_group, write_parquet
from manymodels.core.spec import PanelSpec


def test_panel_is_reproducible_and_has_truth():
    spec = PanelSpec(n_groups=30, mean_rows=50, n_features=4, seed=3)
    a, ta = make_panel(spec)
    b, tb = make_panel(spec)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == ["store", "item", "x0", "x1", "x2", "x3", "y"]
    assert len(ta) == 30 and ta["n_rows"].sum() == len(a)
    c, _ = make_panel(PanelSpec(n_groups=30, mean_rows=50, n_features=4, seed=4))
    assert not np.allclose(a["y"].to_numpy()[:10], c["y"].to_numpy()[:10])


def test_zipf_panel_is_skewed_with_the_same_total():
    uniform, _ = make_panel(PanelSpec(n_groups=500, mean_rows=200, size_distribution="uniform"))
    zipf, truth = make_panel(PanelSpec(n_groups=500, mean_rows=200, size_distribution="zipf", zipf_exponent=1.2))
    sizes = truth["n_rows"]
    assert sizes.max() >= 100 * sizes.median()
    assert abs(len(zipf) - len(uniform)) / len(uniform) < 0.15


def test_writers_both_layouts(tmp_path):
    rows, _ = make_panel(PanelSpec(n_groups=6, mean_rows=20))
    paths = write_gzip_per_group(rows, ("store", "item"), tmp_path / "gz")
    assert len(paths) == 6 and all(p.name.endswith(".csv.gz") for p in paths)
    with gzip.open(paths[0], "rt") as fh:
        assert fh.readline().strip() == "store,item,x0,x1,x2,x3,x4,y"
    assert not list((tmp_path / "gz").glob("*.tmp"))
    out = write_parquet(rows, tmp_path / "pq")
    pd.testing.assert_frame_equal(pd.read_parquet(out), rows)
