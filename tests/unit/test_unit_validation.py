"""Bad input: one test each, all raised on the driver without Spark."""
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from manymodels.core.checks import check_columns, check_estimator, check_settings
from manymodels.core.spec import TrainSpec
from manymodels.errors import InputError
from manymodels.spark.checks import check_group_sizes

DTYPES = {"store": "bigint", "item": "bigint", "x0": "double", "x1": "int", "y": "double", "name": "string"}


def spec(**kw):
    base = dict(group_cols=("store", "item"), feature_cols=("x0", "x1"), label_col="y", estimator=Ridge())
    base.update(kw)
    return TrainSpec(**base)


def test_missing_columns_are_named_with_what_was_found():
    with pytest.raises(InputError, match=r"Missing input column\(s\) 'x9', 'label'.*found only 'store'"):
        check_columns(spec(feature_cols=("x0", "x9"), label_col="label"), DTYPES)


def test_non_numeric_feature_names_column_type_and_fix():
    with pytest.raises(InputError, match=r"'name' is string.*cast"):
        check_columns(spec(feature_cols=("x0", "name")), DTYPES)


def test_column_with_two_roles_is_refused():
    with pytest.raises(InputError, match="both features and group keys or label"):
        check_columns(spec(feature_cols=("x0", "store")), DTYPES)


def test_not_an_estimator():
    with pytest.raises(InputError, match=r"must be a scikit-learn estimator.*found dict"):
        check_estimator({"alpha": 1})
    with pytest.raises(InputError, match=r"pass Ridge\(\) instead"):
        check_estimator(Ridge)


def test_unknown_estimator_parameter_lists_valid_ones():
    with pytest.raises(InputError,
                       match=r"Unknown parameter\(s\) 'alpah' for estimator Ridge: expected one of .*'alpha'"):
        check_estimator(Ridge(), {"alpah": 1.0})
    assert check_estimator(Ridge(), {"alpha": 3.0}).alpha == 3.0


def test_null_group_keys_are_counted_and_named():
    sizes = pd.DataFrame({"store": [1, None, None], "item": [1, 2, 3], "count": [10, 4, 5]})
    with pytest.raises(InputError, match=r"9 input row\(s\) have a null group key in column\(s\) 'store'"):
        check_group_sizes(("store", "item"), sizes)


def test_empty_input():
    with pytest.raises(InputError, match="no rows"):
        check_group_sizes(("store",), pd.DataFrame({"store": [], "count": []}))


def test_settings():
    with pytest.raises(InputError, match="failure_policy='ignore'"):
        check_settings(spec(failure_policy="ignore"))
    with pytest.raises(InputError, match="holdout_fraction=1.5"):
        check_settings(spec(holdout_fraction=1.5))
