"""The one input reader (spark/inputs.py): a table name, a Parquet, CSV or Delta path; an explicit format beats
the guess, and what cannot be read is refused by name before any job."""
from pathlib import Path

import pandas as pd
import pytest

from manymodels.errors import InputError
from manymodels.spark.inputs import input_format, read_any, read_input


def test_the_guess_follows_the_source(tmp_path):
    delta = tmp_path / "sales"
    (delta / "_delta_log").mkdir(parents=True)
    assert input_format("main.sales.panel") == "table"
    assert input_format(str(tmp_path / "panel.csv")) == "csv"
    assert input_format(str(tmp_path / "PANEL.CSV.gz")) == "csv"
    assert input_format(str(delta)) == "delta"
    assert input_format(str(tmp_path / "parquet")) == "parquet"
    assert input_format("s3://bucket/panel") == "parquet"


def test_an_explicit_format_beats_the_guess(tmp_path):
    assert input_format(str(tmp_path / "looks.csv"), "parquet") == "parquet"
    assert input_format("no_slash", "csv") == "csv"
    with pytest.raises(InputError, match=r"fmt='json'.*expected one of table, parquet, csv, delta"):
        input_format("x/y", "json")


@pytest.mark.spark
def test_parquet_csv_and_tables_read_alike(spark, tmp_path):
    pdf = pd.DataFrame({"store": ["a", "a", "b"], "x": [1.0, 2.0, 3.0], "y": [0.5, 1.5, 2.5]})
    pdf.to_parquet(tmp_path / "p.parquet")
    (tmp_path / "csv").mkdir()
    pdf.to_csv(tmp_path / "csv" / "rows.csv", index=False)
    spark.createDataFrame(pdf).createOrReplaceTempView("mm_inputs_view")
    for source, fmt in [(tmp_path / "p.parquet", None), (tmp_path / "csv" / "rows.csv", None),
                        (tmp_path / "csv", "csv"), ("mm_inputs_view", None)]:
        got = read_input(spark, str(source), key_cols=["store"], feature_cols=["x"], label_col="y", fmt=fmt)
        assert got.columns == ["store", "x", "y"], source
        assert sorted(map(tuple, got.toPandas().itertuples(index=False))) == sorted(
            map(tuple, pdf.itertuples(index=False))), source


@pytest.mark.spark
def test_a_missing_path_or_column_is_refused_by_name(spark, tmp_path):
    pd.DataFrame({"store": ["a"], "x": [1.0]}).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(InputError, match=r"input_path=.*nowhere.*not found.*p\.parquet"):
        read_any(spark, str(Path(tmp_path) / "nowhere"))
    with pytest.raises(InputError, match=r"Column\(s\) 'y' not found.*found 'store', 'x'"):
        read_input(spark, str(tmp_path / "p.parquet"), key_cols=["store"], feature_cols=["x"], label_col="y")
