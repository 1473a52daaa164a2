"""Batch scoring on the shared local[2] session: per group (model table, registered alias, run id) and with
one model (an estimator object or an MLflow URI); loads counted per worker process."""
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, RidgeClassifier

from manymodels import tracking
from manymodels.api import score_per_group, score_single
from manymodels.core import model_bytes
from manymodels.errors import InputError
from manymodels.spark.training import train_per_group

pytestmark = pytest.mark.spark
KEYS = ["store", "item"]
FEATURES = ["x0", "x1", "x2"]


@pytest.fixture(scope="module")
def trained(spark, small_panel, tmp_path_factory, mlflow_ctx):
    _, rows, _ = small_panel
    skip = (rows["store"] == rows["store"].iloc[0]) & (rows["item"] == rows["item"].iloc[0])
    df = spark.createDataFrame(rows.assign(y=rows["y"].where(~skip)))
    table = train_per_group(df, group_cols=KEYS, feature_cols=FEATURES, label_col="y", estimator=LinearRegression(),
                            training_run_id="score-1", location=str(tmp_path_factory.mktemp("t") / "table"))
    logged = tracking.log_training(spark, table, mlflow_ctx, name="score_router")
    stranger = rows.head(3).assign(store=999, item=999)
    data = pd.concat([rows, stranger], ignore_index=True).assign(row_id=lambda d: np.arange(len(d)))
    return table, logged, rows, data, rows[skip][KEYS].iloc[0]


def expected_predictions(table, data):
    models = {(r.store, r.item): model_bytes.loads(r.model, r.model_sha256)
              for r in pd.read_parquet(table.version).itertuples() if r.status == "ok"}
    out = {}
    for key, part in data.groupby(KEYS):
        if key in models:
            out.update(zip(part["row_id"], models[key].predict(part[FEATURES].to_numpy())))
    return out


def check_scored(got, table, data, skipped, version):
    assert len(got) == len(data) and got["model_version"].eq(version).all()
    assert list(got.columns) == KEYS + ["row_id", "prediction", "status", "error", "model_version"]
    expected = expected_predictions(table, data)
    ok = got[got["status"] == "ok"]
    assert len(ok) == len(expected)
    np.testing.assert_allclose(ok["prediction"], [expected[i] for i in ok["row_id"]], rtol=1e-12)
    unknown = got[got["store"] == 999]
    assert (unknown["status"] == "unknown_group").all() and "store=999, item=999" in unknown["error"].iloc[0]
    skip = got[(got["store"] == skipped["store"]) & (got["item"] == skipped["item"])]
    assert (skip["status"] == "skipped").all() and "has no model: skipped" in skip["error"].iloc[0]


def test_per_group_with_the_model_table(spark, trained, tmp_path):
    table, _, _, data, skipped = trained
    got = score_per_group(spark.createDataFrame(data), table, passthrough_cols=["row_id"],
                          staging_dir=str(tmp_path)).toPandas()
    check_scored(got, table, data, skipped, "score-1")


@pytest.mark.parametrize("how", ["alias", "version", "run_id"])
def test_per_group_with_the_registered_router(spark, trained, tmp_path, how):
    table, logged, _, data, skipped = trained
    source = {"alias": logged.model_uri, "version": f"models:/score_router/{logged.version}",
              "run_id": None}[how]
    if source is None:
        from mlflow import MlflowClient

        source = MlflowClient().get_model_version("score_router", logged.version).run_id
    got = score_per_group(spark.createDataFrame(data), source, passthrough_cols=["row_id"],
                          staging_dir=str(tmp_path)).toPandas()
    check_scored(got, table, data, skipped, f"score_router/{logged.version}")


def test_each_model_is_loaded_at_most_once_per_worker_process(spark, trained, tmp_path, mlflow_ctx):
    _, _, rows, data, _ = trained
    # models no worker has seen yet (other tests' models stay cached in the reused Python workers)
    table = train_per_group(spark.createDataFrame(rows.assign(y=rows["y"] * 3.0)), group_cols=KEYS,
                            feature_cols=FEATURES, label_col="y", estimator=LinearRegression(),
                            location=str(tmp_path / "t"))
    logged = tracking.log_training(spark, table, mlflow_ctx, name="score_router_loads")
    log = tmp_path / "loads"
    log.mkdir()
    df = spark.createDataFrame(pd.concat([data] * 3, ignore_index=True)).repartition(4)
    old = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "64")  # many batches per task
    try:
        for _ in range(2):  # twice: the second pass finds every model already loaded
            score_per_group(df, logged.model_uri, staging_dir=str(tmp_path / "s"), load_log=str(log)).collect()
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", old)
    per_worker = {p.stem: Counter(p.read_text().split()) for p in log.glob("*.log")}
    assert per_worker, "no worker logged a load"
    assert max(c for counts in per_worker.values() for c in counts.values()) == 1
    assert set().union(*per_worker.values()) == set(pd.read_parquet(table.version)["model_sha256"].dropna())


def test_a_small_model_cache_bound_drops_and_reloads_models(spark, trained, tmp_path):
    """model_cache_mb reaches the workers: with room for one model, each run finds at most that one still
    loaded and loads the others again (with the default bound a worker keeps them all: see the test above),
    and every row scores as with the default. A bound that is not a positive number is refused before any job."""
    table, _, _, data, skipped = trained
    blobs = pd.read_parquet(table.version)["model"].dropna()
    one_model_mb = blobs.map(len).max() / 2**20
    df = spark.createDataFrame(data).coalesce(1)  # one task per run
    log = tmp_path / "loads"
    log.mkdir()
    for _ in range(3):
        got = score_per_group(df, table, passthrough_cols=["row_id"], staging_dir=str(tmp_path / "s"),
                              load_log=str(log), model_cache_mb=one_model_mb, shuffle=False).toPandas()
        check_scored(got, table, data, skipped, "score-1")
    loads = sum(len(p.read_text().split()) for p in log.glob("*.log"))
    assert loads >= 3 * (len(blobs) - 1), f"{loads} loads in 3 runs of {len(blobs)} models"
    with pytest.raises(InputError, match=r"model_cache_mb=0: expected a positive number of megabytes"):
        score_per_group(df, table, staging_dir=str(tmp_path / "s"), model_cache_mb=0)


def test_per_group_classifier_gives_probabilities(spark, small_panel, tmp_path):
    _, rows, _ = small_panel
    rows = rows.assign(label=np.where(rows["y"] > rows.groupby(KEYS)["y"].transform("median"), "high", "low"))
    df = spark.createDataFrame(rows.drop(columns=["y"]))
    table = train_per_group(df, group_cols=KEYS, feature_cols=FEATURES, label_col="label",
                            estimator=LogisticRegression(), location=str(tmp_path / "t"))
    got = score_per_group(df, table, staging_dir=str(tmp_path)).toPandas()
    assert set(got["prediction"]) == {"high", "low"} and got["status"].eq("ok").all()
    probs = got["probabilities"].map(dict)
    assert probs.map(lambda d: sorted(d) == ["high", "low"] and abs(sum(d.values()) - 1) < 1e-9).all()
    assert (probs.map(lambda d: max(d, key=d.get)) == got["prediction"]).all()
    assert (got["prediction"] == rows["label"].to_numpy()).mean() > 0.6


def test_shuffle_scores_each_group_in_one_task(spark, trained, tmp_path):
    """Rows of every group in every input partition: with the default shuffle each model is loaded by one
    worker only, once; without it the same rows score the same, sorted within their partitions."""
    _, _, rows, data, _ = trained
    table = train_per_group(spark.createDataFrame(rows.assign(y=rows["y"] * 5.0)), group_cols=KEYS,
                            feature_cols=FEATURES, label_col="y", estimator=LinearRegression(),
                            training_run_id="score-shuffle", location=str(tmp_path / "t"))
    df = spark.createDataFrame(pd.concat([data] * 3, ignore_index=True)).repartition(4)  # round robin
    log = tmp_path / "loads"
    log.mkdir()
    shuffled = score_per_group(df, table, passthrough_cols=["row_id"], staging_dir=str(tmp_path / "s"),
                               load_log=str(log)).toPandas()
    loads = Counter()
    for p in log.glob("*.log"):
        loads.update(p.read_text().split())
    assert loads and set(loads.values()) == {1}, f"a model was loaded by more than one worker: {loads.most_common(2)}"
    assert set(loads) == set(pd.read_parquet(table.version)["model_sha256"].dropna())
    plain = score_per_group(df, table, passthrough_cols=["row_id"], staging_dir=str(tmp_path / "s"),
                            shuffle=False).toPandas()
    order = ["row_id", "prediction", "status"]
    a, b = (f.sort_values(order, na_position="last").reset_index(drop=True) for f in (shuffled, plain))
    assert len(a) == 3 * len(data)
    pd.testing.assert_frame_equal(a, b)


@pytest.fixture(scope="module")
def classifier():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(600, 4)), columns=["a", "b", "c", "d"])
    y = np.where(X["a"] + X["b"] ** 2 > 1, "yes", "no")
    return HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(X, y), X


def test_single_model_object_and_mlflow_uri_score_the_same(spark, classifier, mlflow_ctx):
    model, X = classifier
    df = spark.createDataFrame(X.assign(id=np.arange(len(X))))
    got = score_single(df, model, passthrough_cols=["id"]).toPandas().sort_values("id")
    assert got["prediction"].tolist() == model.predict(X).tolist()
    proba = np.array([[p["no"], p["yes"]] for p in got["probabilities"]])  # a struct: one field per class
    np.testing.assert_allclose(proba, model.predict_proba(X), rtol=1e-12)
    assert got["model_version"].iloc[0] == f"sha256:{model_bytes.sha256(model_bytes.dumps(model))[:12]}"
    logged = tracking.log_estimator(model, mlflow_ctx, run_key="single-score", name="single_score", input_example=X,
                                    serialization_format="cloudpickle")
    via_uri = score_single(df, logged.model_uri, passthrough_cols=["id"]).toPandas().sort_values("id")
    assert via_uri["prediction"].tolist() == got["prediction"].tolist()
    assert via_uri["model_version"].eq(f"single_score/{logged.version}").all()


def test_single_model_output_schema_follows_the_model(spark, classifier):
    model, X = classifier
    df = spark.createDataFrame(X)
    proba = score_single(df, model).schema["probabilities"].dataType
    assert [(f.name, f.dataType.simpleString()) for f in proba.fields] == [("no", "double"), ("yes", "double")]
    ridge = RidgeClassifier().fit(X, model.predict(X))  # a classifier without predict_proba: no probabilities
    got = score_single(df, ridge).toPandas()
    assert list(got.columns) == ["prediction", "status", "error", "model_version"]
    assert got["prediction"].tolist() == ridge.predict(X).tolist()


@pytest.mark.parametrize("change,needle", [
    (lambda d: d.drop(columns=["c"]), "lacks feature column(s) 'c'"),
    (lambda d: d.assign(b=d["b"].astype(str)), "'b (string)' are not numeric"),
])
def test_single_model_bad_features_are_refused_on_the_driver(spark, classifier, change, needle):
    model, X = classifier
    with pytest.raises(InputError) as err:
        score_single(spark.createDataFrame(change(X)), model)
    assert needle in str(err.value)


def test_extra_feature_and_unknown_alias_are_refused(spark, classifier, trained, tmp_path):
    model, X = classifier
    with pytest.raises(InputError, match=r"'e' are not inputs of model"):
        score_single(spark.createDataFrame(X.assign(e=1.0)), model, feature_cols=["a", "b", "c", "d", "e"])
    _, _, _, data, _ = trained
    with pytest.raises(InputError, match=r"'models:/score_router@nope' not found in the registry"):
        score_per_group(spark.createDataFrame(data), "models:/score_router@nope", staging_dir=str(tmp_path))
    with pytest.raises(InputError, match=r"lacks feature column\(s\) 'x1'"):
        score_per_group(spark.createDataFrame(data.drop(columns=["x1"])), "models:/score_router@champion",
                        staging_dir=str(tmp_path))


def test_scoring_workers_freeze_their_imports(spark, classifier):
    """A Python worker that scored has frozen its long-lived objects (worker_process.freeze_imports): the
    collections after every task skip them. The driver, which scored nothing itself, froze nothing."""
    import gc

    model, frame = classifier
    before = gc.get_freeze_count()
    out = score_single(spark.createDataFrame(frame).repartition(2), model).toPandas()
    assert len(out) == len(frame)

    def probe(batches):
        from manymodels.spark import worker_process

        for _ in batches:
            pass
        yield pd.DataFrame({"frozen": [gc.get_freeze_count()], "in_task": [worker_process.in_spark_task()]})

    workers = spark.range(0, 2, 1, 2).mapInPandas(probe, "frozen long, in_task boolean").toPandas()
    assert workers["in_task"].all()
    assert (workers["frozen"] > 0).any(), workers  # reused workers that scored keep their freeze
    assert gc.get_freeze_count() == before
