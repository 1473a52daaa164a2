"""End-to-end properties on Spark over generated panels (at least 25 examples each): training keeps every group
and its key exactly, the Spark path fits what the pure path fits, and logging, registering and every scoring path
give one output row per input row, each ``ok`` or explained.

Under ``MM_PROPERTY_REMOTE`` (a Spark Connect URL, set by ``test_connect_properties.py``) the same properties run
through Spark Connect with a smaller budget."""
from __future__ import annotations

import datetime
import math
import os
import pickle
import uuid

import mlflow
import numpy as np
import pytest
from hypothesis import given, settings
from panels import KEY_TYPES, Panel, examples, panels, same_key
from sklearn.linear_model import LinearRegression, LogisticRegression
from test_pure_properties import _sorted_like_spark

from manymodels import tracking
from manymodels.api import score_per_group
from manymodels.core.fitting import fit_packed
from manymodels.core.keys import canonical_key, key_text
from manymodels.errors import InputError
from manymodels.spark.session import cols
from manymodels.spark.training import train_per_group

pytestmark = pytest.mark.spark
REMOTE = os.environ.get("MM_PROPERTY_REMOTE")
BUDGET = 6 if REMOTE else 25


@pytest.fixture(scope="module")
def session(request):
    if not REMOTE:
        yield request.getfixturevalue("spark")
        return
    from manymodels.spark.session import get_spark, is_connect

    os.environ["SPARK_REMOTE"] = REMOTE  # the session-wide fixture cleared it
    remote = get_spark()
    assert is_connect(remote)
    yield remote
    remote.stop()


@pytest.fixture(scope="module")
def ctx(_isolated_home):
    return tracking.configure(experiment="manymodels-properties")


def _train(spark, panel: Panel, **kw):
    estimator = LogisticRegression() if panel.classification else LinearRegression()
    location = os.path.join(os.environ["MANYMODELS_HOME"], "properties", uuid.uuid4().hex)
    return train_per_group(panel.frame(spark), group_cols=list(panel.key_names),
                           feature_cols=list(panel.feature_names), label_col=panel.label_name, estimator=estimator,
                           min_rows=2, location=location, progress=False, training_run_id=f"p-{uuid.uuid4().hex[:8]}",
                           **kw)


def _has_inf(panel: Panel) -> bool:
    k = len(panel.key_names)
    return any(isinstance(v, float) and math.isinf(v) for r in panel.rows for v in r[k:])


def _key(row, names) -> tuple:
    return tuple(row[n] for n in names)


@settings(max_examples=examples(BUDGET))
@given(panel=panels(max_groups=4, inf=True))
def test_training_has_one_row_per_group_with_its_exact_key_and_the_pure_models(session, panel):
    try:
        table = _train(session, panel)
    except InputError as exc:  # infinities are refused before training, naming the column
        assert _has_inf(panel), f"refused a valid panel: {exc}"
        assert "Infinite values" in str(exc)
        return
    assert not _has_inf(panel), "an infinite value was not refused"
    names = list(panel.key_names)
    models = table.read(session)
    source = panel.frame(session)
    assert [models.schema[n].dataType for n in names] == [source.schema[n].dataType for n in names]
    rows = models.collect()
    assert len(rows) == len(panel.groups()) == table.n_groups
    distinct = source.select(*[f"`{n.replace('`', '``')}`" for n in names]).distinct().collect()
    assert len(distinct) == len(rows)
    for want in distinct:  # every input key comes back with its value (NaN, -0.0, timestamps, binary...)
        assert sum(all(same_key(a, b) for a, b in zip(_key(r, names), _key(want, names))) for r in rows) == 1, want
    joined = models.join(source, on=names, how="inner").select(*[f"`{n.replace('`', '``')}`" for n in names])
    assert joined.distinct().count() == len(rows), "a model-table key does not join back to its input rows"
    pure = {canonical_key(_key(r, names)): r
            for _, r in fit_packed(_sorted_like_spark(panel), spec=table.spec).iterrows()}
    frame = panel.pandas()
    for row in rows:
        key = _key(row, names)
        assert row["status"] in ("ok", "failed", "skipped")
        if row["status"] != "ok":
            assert row["error"] and key_text(tuple(names), key) in row["error"], row["error"]
        twin = pure[canonical_key(key)]
        assert twin["status"] == row["status"], (key, twin["error"], row["error"])
        if row["status"] == "ok":  # the Spark path's model predicts what the pure path's does
            X = frame[list(panel.feature_names)].dropna().to_numpy(dtype="float64")[:20]
            np.testing.assert_array_equal(pickle.loads(row["model"]).predict(X), pickle.loads(twin["model"]).predict(X))


SCORED_TYPES = KEY_TYPES


@settings(max_examples=examples(BUDGET))
@given(panel=panels(max_groups=3, key_types=SCORED_TYPES))
def test_logging_registering_and_scoring_give_one_row_per_input_row(session, ctx, panel, tmp_path_factory):
    table = _train(session, panel)
    name = f"prop_{uuid.uuid4().hex[:10]}"
    logged = tracking.log_training(session, table, ctx, name=name)
    again = tracking.log_training(session, table, ctx, name=name)  # idempotent: the same run and version
    assert (again.run_id, again.version, again.reused) == (logged.run_id, logged.version, True)
    names, features = list(panel.key_names), list(panel.feature_names)
    source = panel.frame(session)
    staging = str(tmp_path_factory.mktemp("staging"))
    for model in (table, logged.model_uri):
        scored = score_per_group(source, model, staging_dir=staging).toPandas()
        assert len(scored) == len(panel.rows)
        _check_explained(scored, names)
    if not _pandas_dates(panel):
        return  # MLflow's schema enforcement turns date keys into pandas timestamps: years 1678 to 2261 only
    pyfunc = mlflow.pyfunc.load_model(logged.model_uri)
    out = pyfunc.predict(_sorted_like_spark(panel)[names + features])
    assert len(out) == len(panel.rows)
    _check_explained(out, names)
    if REMOTE:
        return  # mlflow.pyfunc.spark_udf is checked on classic Spark
    kind = "string" if panel.classification else "double"
    udf = mlflow.pyfunc.spark_udf(session, logged.model_uri,
                                  result_type=f"prediction {kind}, status string, error string")
    got = source.select(udf(*cols(names + features)).alias("out")).select("out.*").toPandas()
    assert len(got) == len(panel.rows)
    assert ((got["status"] == "ok") | got["error"].str.len().gt(4)).all()  # spark_udf writes a null error "None"


def _pandas_dates(panel: Panel) -> bool:
    dates = [v for r in panel.rows for v, t in zip(r, panel.key_types) if t == "date"]
    return all(datetime.date(1678, 1, 1) < d < datetime.date(2262, 1, 1) for d in dates)


def _check_explained(scored, names):
    for _, row in scored.iterrows():
        if row["status"] == "ok":
            assert row["error"] is None or row["error"] != row["error"]
        else:
            assert row["error"] and key_text(tuple(names), _key(row, names)) in row["error"], row["error"]
