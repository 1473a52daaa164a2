"""The single-model scoring body and the Arrow batch settings, without Spark."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression, RidgeClassifier

from manymodels.core.memory import TYPE_BYTES, arrow_batch_conf
from manymodels.errors import InputError
from manymodels.settings import ARROW_BYTES_UNCHECKED, ARROW_MAX_BYTES, ARROW_MAX_RECORDS
from manymodels.spark import scoring
from manymodels.spark.scoring import coalesced, resolve_single_model, score_single_batches

FEATURES = ["a", "b", "c"]


def batches_of(frame: pd.DataFrame, sizes) -> list:
    out, start = [], 0
    for n in sizes:
        out.append(pa.RecordBatch.from_pandas(frame.iloc[start:start + n], preserve_index=False))
        start += n
    assert start == len(frame)
    return out


def test_coalesced_groups_consecutive_batches_up_to_the_row_target(monkeypatch):
    monkeypatch.setattr(scoring, "SCORE_BATCH_ROWS", 25)
    frame = pd.DataFrame({"a": np.arange(70.0)})
    groups = list(coalesced(iter(batches_of(frame, [10, 0, 10, 10, 30, 5, 5])), 1))
    assert [[b.num_rows for b in g] for g in groups] == [[10, 10, 10], [30], [5, 5]]  # empty batch dropped
    monkeypatch.setattr(scoring, "SCORE_BATCH_BYTES", 8 * 3 * 12)  # 12 rows of 3 float64 features
    assert [sum(b.num_rows for b in g) for g in coalesced(iter(batches_of(frame, [10] * 7)), 3)] == [20] * 3 + [10]
    assert list(coalesced(iter([]), 3)) == []


def test_single_model_body_scores_coalesced_batches_like_one_predict(monkeypatch):
    monkeypatch.setattr(scoring, "SCORE_BATCH_ROWS", 50)
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 3)), columns=FEATURES)
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(X, np.where(X["a"] > 0, "up", "down"))
    X.loc[7, "b"] = np.nan  # a null reaches the model as NaN
    frame = X.assign(id=np.arange(300))
    resolved = resolve_single_model(model)
    out = pa.Table.from_batches(list(score_single_batches(iter(batches_of(frame, [40, 40, 0, 100, 120])),
                                                          model=resolved, passthrough=("id",))))
    assert out.column_names == ["id", "prediction", "probabilities", "status", "error"] and out.num_rows == 300
    assert set(out.column("status").to_pylist()) == {"ok"} and out.column("error").null_count == 300
    assert out.column("id").to_pylist() == list(range(300))
    assert out.column("prediction").to_pylist() == model.predict(X).tolist()
    assert out.schema.field("probabilities").type == pa.struct([("down", pa.float64()), ("up", pa.float64())])
    proba = np.column_stack([out.column("probabilities").combine_chunks().field(c).to_numpy() for c in ("down", "up")])
    np.testing.assert_array_equal(proba, model.predict_proba(X))


def test_single_model_body_regression_and_non_float_features(monkeypatch):
    monkeypatch.setattr(scoring, "SCORE_BATCH_ROWS", 30)
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(100, 3)), columns=FEATURES)
    model = LinearRegression().fit(X.to_numpy(), X["a"] * 2 + 1)
    frame = X.assign(c=np.arange(100, dtype="int32"))  # an int column takes the pandas path
    resolved = resolve_single_model(model, feature_cols=FEATURES)
    out = pa.Table.from_batches(list(score_single_batches(iter(batches_of(frame, [25] * 4)), model=resolved,
                                                          passthrough=())))
    assert out.column_names == ["prediction", "status", "error"]
    np.testing.assert_allclose(out.column("prediction").to_numpy(), model.predict(frame[FEATURES].to_numpy()))


def test_classifier_without_probabilities_gives_predictions_only():
    rng = np.random.default_rng(2)
    X = pd.DataFrame(rng.normal(size=(80, 3)), columns=FEATURES)
    model = RidgeClassifier().fit(X, np.where(X["b"] > 0, 1, 0))
    resolved = resolve_single_model(model)
    assert resolved.task == "classification" and resolved.classes == ()
    out = pa.Table.from_batches(list(score_single_batches(iter(batches_of(X, [80])), model=resolved, passthrough=())))
    assert out.column_names == ["prediction", "status", "error"]
    assert out.column("prediction").to_pylist() == [str(v) for v in model.predict(X)]


def test_classes_that_collide_as_text_are_refused():
    class Model:  # a classifier whose labels 1 and "1" would name the same probability column
        classes_ = np.array([1, "1"], dtype=object)
        feature_names_in_ = np.array(FEATURES, dtype=object)

        def predict(self, X):
            return np.zeros(len(X))

        def predict_proba(self, X):
            return np.full((len(X), 2), 0.5)

    with pytest.raises(InputError, match=r"not distinct as text .*'1', '1'"):
        resolve_single_model(Model())


def test_a_model_that_is_not_a_scikit_learn_estimator_resolves():
    class Wrapper:  # like an MLflow pyfunc model: predict only, no scikit-learn tags
        def predict(self, X):
            return np.asarray(X)[:, 0] * 2

    resolved = resolve_single_model(Wrapper(), feature_cols=FEATURES)
    assert (resolved.task, resolved.classes, resolved.feature_cols) == ("regression", (), tuple(FEATURES))


@pytest.mark.parametrize("types,rows", [
    ({"k": "bigint", "x": "double", "y": "double"}, 100_000),  # narrow: the row cap
    ({"k": "string", **{f"x{i}": "double" for i in range(2_000)}}, (64 << 20) // (TYPE_BYTES["string"] + 8 * 2_000)),
    ({f"s{i}": "string" for i in range(100_000)}, 1_000),  # never fewer than 1,000 rows
])
def test_arrow_batch_conf_bounds_batches_by_rows_alone(types, rows):
    conf = arrow_batch_conf(100_000, types, list(types))
    assert conf == {ARROW_MAX_RECORDS: str(rows), ARROW_MAX_BYTES: ARROW_BYTES_UNCHECKED}
