"""The bad-input catalogue (issue 7, part 7): one table of bad inputs across training, tuning, fold ensembles,
scoring and job parameters (CLI options, notebook widgets, job functions).

Every case must:
* raise the expected error type (``InputError``; through the CLI: exit code 2 with the message on stderr),
* with a message naming the offending column / group / parameter, what was expected or found, and the fix
  (asserted as substrings),
* run at most ``max_jobs`` Spark jobs before it fails (0: refused on the driver from the schema and the
  arguments; data-dependent checks may run the one cheap aggregate that precedes training),
* and leave every store exactly as it was: the bytes of every file under MANYMODELS_HOME (model tables,
  MLflow artifacts, scores, search staging; the MLflow sqlite file included) and, through MlflowClient,
  the experiments, runs, registered models, versions and aliases. The one exception is the scoring cache
  (``staging/models/reg-<index sha>``: a registered version's packed models, the same bytes whatever happens next),
  which may gain a complete folder but never a partial one.
"""
from __future__ import annotations

import hashlib
import os
import runpy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

from manymodels import tracking
from manymodels.api import score_per_group, score_single
from manymodels.core.ensemble import FoldEnsembleClassifier, FoldEnsembleRegressor
from manymodels.errors import InputError
from manymodels.jobs.cli import main as cli
from manymodels.jobs.steps import batch_score, train_and_register
from manymodels.spark.search import search, search_per_group
from manymodels.studies.fold_ensemble import run_study
from manymodels.studies.tuning import tune

pytestmark = pytest.mark.spark
ROOT = Path(__file__).resolve().parents[2]
ROUTER = "catalogue_router"
FEATURES = ["x0", "x1", "x2"]
KEYS = ["store", "item"]
# The scoring staging folder: a registered router's packed store, copied once per version (same bytes whether
# the scoring call then succeeds or not); excluded from the byte comparison, checked to hold no partial copy.
CACHE = "staging"
SCHEMA_READ = 1  # reading a Parquet input's schema (its footer) is one small Spark job


# ---------------------------------------------------------------- the stores, before and after

def snapshot(home: Path) -> dict:
    """Every file under ``home`` (path -> SHA-256 of its bytes) and the MLflow store's contents."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    files, staged = {}, {}
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        rel = path.relative_to(home)
        if rel.parts[0] == CACHE:  # a cache: may fill, but only with complete folders (checked below)
            staged.setdefault(str(rel.parent), set()).add(rel.name)
            continue
        files[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    half_written = sorted(folder for folder, names in staged.items()
                          if "models.parquet" not in names or any(n.startswith(".") for n in names))
    client = MlflowClient()
    experiments = client.search_experiments(view_type=ViewType.ALL)
    runs = {r.info.run_id: (r.info.status, tuple(sorted(r.data.tags.items())))
            for r in client.search_runs([e.experiment_id for e in experiments], run_view_type=ViewType.ALL,
                                        max_results=10_000)}
    models = {m.name: dict(m.aliases) for m in client.search_registered_models()}
    versions = {(v.name, v.version, v.run_id) for name in models
                for v in client.search_model_versions(f"name = '{name}'")}
    return {"files": files, "half_written_cache_folders": half_written,
            "experiments": sorted((e.name, e.lifecycle_stage) for e in experiments), "runs": runs,
            "registered_models_and_aliases": models, "versions": versions}


def changes(before: dict, after: dict) -> list[str]:
    out = []
    for part in before:
        if before[part] == after[part]:
            continue
        if isinstance(before[part], dict):
            added = sorted(set(after[part]) - set(before[part]))
            gone = sorted(set(before[part]) - set(after[part]))
            changed = sorted(k for k in set(before[part]) & set(after[part]) if before[part][k] != after[part][k])
            out.append(f"{part}: added {added[:5]}, removed {gone[:5]}, changed {changed[:5]}")
        else:
            out.append(f"{part}: {before[part]} -> {after[part]}")
    return out


# ---------------------------------------------------------------- what the cases work on

@pytest.fixture(scope="module")
def env(spark, mlflow_ctx, small_panel, tmp_path_factory):
    """A small panel (6 groups), its Spark frame, a registered router with alias 'champion', a fitted single
    model, and a Parquet copy of the panel to score."""
    from manymodels.spark.training import train_per_group

    _, rows, _ = small_panel
    keys = rows[KEYS].drop_duplicates().head(6)
    rows = rows.merge(keys, on=KEYS).reset_index(drop=True)
    home = Path(os.environ["MANYMODELS_HOME"])
    table = train_per_group(spark.createDataFrame(rows), group_cols=KEYS, feature_cols=FEATURES, label_col="y",
                            estimator=LinearRegression(), training_run_id="catalogue-fixture",
                            location=str(home / "tables" / "catalogue_fixture"))
    tracking.log_training(spark, table, mlflow_ctx, name=ROUTER, alias="champion")
    data = tmp_path_factory.mktemp("catalogue_input")
    rows.to_parquet(data / "panel.parquet", index=False)
    single = LinearRegression().fit(rows[FEATURES], rows["y"])
    return Env(spark, mlflow_ctx, home, rows, str(data / "panel.parquet"), single)


@dataclass
class Env:
    spark: object
    ctx: object
    home: Path
    rows: pd.DataFrame
    parquet: str
    single: object
    prepared: object = None  # the current case's input (Case.prepare)

    def sdf(self, frame: pd.DataFrame | None = None):
        return self.spark.createDataFrame(self.rows if frame is None else frame)

    def changed(self, **cols) -> pd.DataFrame:
        frame = self.rows.copy()
        for c, v in cols.items():
            frame[c] = v
        return frame

    @property
    def table_location(self) -> str:
        return str(self.home / "tables" / "catalogue")

    def one_group(self) -> tuple:
        return tuple(self.rows[KEYS].iloc[0])


def train(env: Env, frame=None, **kw):
    from manymodels.spark.training import train_per_group

    args = dict(group_cols=KEYS, feature_cols=FEATURES, label_col="y", estimator=LinearRegression(),
                location=env.table_location, progress=False)
    args.update(kw)
    df = frame if hasattr(frame, "sparkSession") else env.sdf(frame)
    return train_per_group(df, **args)


# ---------------------------------------------------------------- the catalogue

@dataclass(frozen=True)
class Case:
    id: str
    area: str
    run: Callable[[Env], object]
    needles: tuple[str, ...]  # substrings the message must contain (offending thing, expected/found, fix)
    max_jobs: int = 0
    error: type = InputError
    prepare: Callable[[Env], object] | None = field(default=None)  # builds inputs before the snapshot


def _null_key(env):
    frame = env.rows.copy().astype({"store": "float64"})
    frame.loc[:4, "store"] = np.nan
    return frame


def _inf_feature(env):
    frame = env.rows.copy()
    frame.loc[3, "x1"] = np.inf
    return frame


def _inf_parquet(env):
    path = Path(tempfile.mkdtemp(prefix="catalogue-inf-")) / "panel.parquet"  # outside the snapshot
    _inf_feature(env).to_parquet(path, index=False)
    return str(path)


def _one_row_group(env):
    extra = env.rows.iloc[[0]].assign(store=999, item=999)
    return pd.concat([env.rows, extra], ignore_index=True)


def _duplicate_input_column(env):
    df = env.sdf()
    return df.select(*df.columns, df["x1"].alias("x1"))


def _string_label(env):
    return env.changed(y=env.rows["y"].round().astype(int).astype(str))


def _string_feature(env):
    return env.changed(x1=env.rows["x1"].astype(str))


def _small_group(env, n):
    extra = env.rows.iloc[:n].assign(store=999, item=999)
    return pd.concat([env.rows, extra], ignore_index=True)


def _null_label(env):
    frame = env.rows.copy()
    frame.loc[[2, 5], "y"] = None
    return frame


CASES = [
    # ------------------------------------------------------------ training (train_per_group)
    Case("train-null-key", "training", lambda e: train(e, e.prepared), ("null group key", "'store'", "dropna"),
         max_jobs=2, prepare=_null_key),
    Case("train-duplicate-feature-names", "training", lambda e: train(e, feature_cols=["x0", "x1", "x0"]),
         ("'x0'", "more than once", "once")),
    Case("train-duplicate-input-columns", "training", lambda e: train(e, e.prepared),
         ("'x1' (2 columns)", "Spark cannot tell which one", "drop or rename"), prepare=_duplicate_input_column),
    Case("train-string-feature", "training", lambda e: train(e, e.prepared), ("'x1' is string", "cast"),
         prepare=_string_feature),
    Case("train-infinite-feature", "training", lambda e: train(e, e.prepared),
         ("Infinite values", "'x1' (1 row(s))", "store=0, item=0", "drop those rows"),
         max_jobs=4, prepare=_inf_feature),
    Case("train-continuous-label-classifier", "training",
         lambda e: train(e, estimator=LogisticRegression()), ("'y'", "LogisticRegression", "continuous", "regressor"),
         max_jobs=4),
    Case("train-string-label-regressor", "training", lambda e: train(e, e.prepared),
         ("'y'", "string", "LinearRegression", "classifier"), prepare=_string_label),
    Case("train-one-row-group-raise", "training", lambda e: train(e, e.prepared, failure_policy="raise"),
         ("store=999, item=999 (1 row(s) with a label)", "min_rows=10", "failure_policy='record'"), max_jobs=2,
         prepare=_one_row_group),
    Case("train-min-rows-1", "training", lambda e: train(e, min_rows=1), ("min_rows=1", "at least 2")),
    Case("train-param-typo", "training", lambda e: train(e, params={"fit_intercep": False}),
         ("'fit_intercep'", "fit_intercept", "Fix the name")),
    # ------------------------------------------------------------ tuning (search, search_per_group, tune)
    Case("search-param-grid-typo", "tuning",
         lambda e: search(e.spark, e.rows, label_col="y", feature_cols=FEATURES, estimator=Ridge(),
                          param_grid={"alpah": [0.1, 1.0]}, cv=3),
         ("'alpah'", "Ridge", "'alpha'", "Fix the name")),
    Case("search-per-group-too-few-rows-for-folds", "tuning",
         lambda e: search_per_group(e.sdf(e.prepared), group_cols=KEYS, label_col="y", feature_cols=FEATURES,
                                    estimator=Ridge(), param_grid={"alpha": [1.0]}, cv=3, location=e.table_location),
         ("store=999, item=999", "3 CV folds", "Lower cv"), max_jobs=2, prepare=lambda e: _small_group(e, 2)),
    Case("search-per-group-infinite-feature", "tuning",
         lambda e: search_per_group(e.sdf(e.prepared), group_cols=KEYS, label_col="y", feature_cols=FEATURES,
                                    estimator=Ridge(), param_grid={"alpha": [1.0]}, cv=3, location=e.table_location),
         ("Infinite values", "'x1' (1 row(s))", "store=0, item=0"), max_jobs=4, prepare=_inf_feature),
    Case("tune-scoring-typo-new-experiment", "tuning",
         lambda e: tune(e.spark, input_path=e.parquet, label_col="y", estimator="sklearn.linear_model.Ridge",
                        param_grid='{"alpha": [0.5, 1.0]}', cv="3", scoring="r3", model_name="catalogue_tuned",
                        experiment="catalogue-never-created"),
         ("'r3'", "valid scikit-learn scorer names", "r2")),
    Case("tune-param-grid-not-json", "tuning",
         lambda e: tune(e.spark, input_path=e.parquet, label_col="y", estimator="sklearn.linear_model.Ridge",
                        param_grid="{alpha: [1]}", experiment="catalogue-never-created"),
         ("param_grid '{alpha: [1]}' is not JSON", '{"n_estimators": [10, 20, 50]}')),
    Case("cli-tune-cv-not-a-number", "tuning",
         lambda e: cli(["tune", "--input_path", e.parquet, "--label_col", "y", "--estimator",
                        "sklearn.linear_model.Ridge", "--param_grid", '{"alpha": [1.0]}', "--cv", "three",
                        "--experiment", "catalogue-never-created"]),
         ("cv='three'", "expected a number of folds"), error=SystemExit),
    # ------------------------------------------------------------ fold ensembles
    Case("ensemble-one-member", "ensemble",
         lambda e: FoldEnsembleRegressor(n_members=1).fit(e.sdf(), "y", feature_cols=FEATURES),
         ("n_members=1", "expected an integer >= 2")),
    Case("ensemble-classifier-continuous-label", "ensemble",
         lambda e: FoldEnsembleClassifier().fit(e.sdf(), "y", feature_cols=FEATURES),
         ("Label column 'y'", "class labels", "FoldEnsembleRegressor"), max_jobs=2),
    Case("ensemble-string-feature", "ensemble",
         lambda e: FoldEnsembleRegressor().fit(e.sdf(e.prepared), "y", feature_cols=FEATURES),
         ("'x1' is string", "cast"), prepare=_string_feature),
    Case("ensemble-infinite-feature", "ensemble",
         lambda e: FoldEnsembleRegressor().fit(e.sdf(e.prepared), "y", feature_cols=FEATURES),
         ("Infinite values", "'x1' (1 row(s))", "drop those rows"), max_jobs=4, prepare=_inf_feature),
    Case("ensemble-null-label", "ensemble",
         lambda e: FoldEnsembleRegressor().fit(e.sdf(e.prepared), "y", feature_cols=FEATURES),
         ("null label in column 'y'", "dropna"), max_jobs=2, prepare=_null_label),
    Case("notebook-04-n-members-not-a-number", "job parameters",
         lambda e: run_study(e.spark, n_samples="1000", n_members="five", log=False),
         ("n_members='five'", "integer")),
    # ------------------------------------------------------------ scoring
    Case("score-missing-feature", "scoring",
         lambda e: score_per_group(e.sdf().drop("x2"), f"models:/{ROUTER}@champion"),
         ("'x2'", "lacks feature column", "Add them")),
    Case("score-unknown-alias", "scoring",
         lambda e: score_per_group(e.sdf(), f"models:/{ROUTER}@nope"),
         (f"{ROUTER}@nope", "not found", "Check the name and alias")),
    Case("score-string-feature", "scoring",
         lambda e: score_per_group(e.sdf(e.prepared), f"models:/{ROUTER}@champion"),
         ("x1 (string)", "Cast"), prepare=_string_feature),
    Case("score-missing-key-column", "scoring",
         lambda e: score_per_group(e.sdf().drop("item"), f"models:/{ROUTER}@champion"),
         ("'item'", "not found in the data to score", "Add")),
    Case("score-single-missing-feature", "scoring",
         lambda e: score_single(e.sdf().drop("x1"), e.single),
         ("'x1'", "lacks feature column", "Add them")),
    Case("batch-score-unknown-model", "scoring",
         lambda e: batch_score(e.spark, input_path=e.parquet, model_name="catalogue_routr",
                               output_table=str(e.home / "scores" / "catalogue")),
         ("catalogue_routr", "not found", "Check the name"), max_jobs=SCHEMA_READ),
    Case("batch-score-missing-input", "scoring",
         lambda e: batch_score(e.spark, input_path=str(e.home / "no_such_folder"), model_name=ROUTER,
                               output_table=str(e.home / "scores" / "catalogue")),
         ("no_such_folder", "not found", "input_path")),
    # ------------------------------------------------------------ job parameters (CLI, notebook widgets, jobs)
    Case("notebook-01-n-groups-not-a-number", "job parameters",
         lambda e: notebook("01_prepare_data.py", MM_N_GROUPS="ten"),
         ("n_groups='ten'", "expected an integer", "MM_N_GROUPS")),
    Case("notebook-01-seed-not-a-number", "job parameters",
         lambda e: notebook("01_prepare_data.py", MM_SEED="abc"),
         ("seed='abc'", "expected an integer")),
    Case("cli-prepare-n-groups-not-a-number", "job parameters",
         lambda e: cli(["prepare", "--n_groups", "ten"]),
         ("n_groups='ten'", "expected an integer"), error=SystemExit),
    Case("cli-train-param-typo-new-experiment", "job parameters",
         lambda e: cli(["train", "--input_path", e.parquet, "--group_cols", "store,item", "--feature_cols",
                        "x0,x1,x2", "--label_col", "y", "--estimator", "sklearn.linear_model.Ridge",
                        "--estimator_params", '{"alpah": 1}', "--experiment", "catalogue-never-created",
                        "--model_table", e.table_location]),
         ("'alpah'", "Ridge", "'alpha'"), error=SystemExit),
    Case("job-score-shuffle-not-a-boolean", "job parameters",
         lambda e: batch_score(e.spark, input_path=e.parquet, model_name=ROUTER, shuffle="maybe",
                               output_table=str(e.home / "scores" / "catalogue")),
         ("shuffle='maybe'", "expected true or false", "MM_SHUFFLE")),
    Case("cli-score-model-cache-not-a-number", "job parameters",
         lambda e: cli(["score", "--input_path", e.parquet, "--model_name", ROUTER, "--model_cache_mb", "lots",
                        "--output_table", str(e.home / "scores" / "catalogue")]),
         ("model_cache_mb='lots'", "positive number of megabytes", "model_cache_mb=2048"), error=SystemExit),
    Case("job-train-estimator-typo", "job parameters",
         lambda e: train_and_register(e.spark, e.parquet, group_cols=KEYS, feature_cols=FEATURES, label_col="y",
                                      estimator="sklearn.linear_model.LinearRegresion",
                                      experiment="catalogue-never-created", location=e.table_location),
         ("'sklearn.linear_model.LinearRegresion'", "cannot be imported", "sklearn.linear_model.Ridge")),
    Case("job-train-missing-column", "job parameters",
         lambda e: train_and_register(e.spark, e.parquet, group_cols=KEYS, feature_cols=["x0", "x9"],
                                      label_col="y", estimator="sklearn.linear_model.LinearRegression",
                                      experiment=e.ctx.experiment_name, location=e.table_location),
         ("'x9'", "not found", "feature_cols"), max_jobs=SCHEMA_READ),
    Case("job-train-infinite-feature-new-experiment", "job parameters",  # data errors make no experiment either
         lambda e: train_and_register(e.spark, e.prepared, group_cols=KEYS, feature_cols=FEATURES, label_col="y",
                                      estimator="sklearn.linear_model.LinearRegression",
                                      experiment="catalogue-never-created", location=e.table_location),
         ("Infinite values", "'x1'", "replace them"), max_jobs=SCHEMA_READ + 4, prepare=_inf_parquet),
]


def _renamed(env, **names):
    return env.rows.rename(columns=names)


def _case_twin(env):
    return env.rows.assign(X1=env.rows["x1"] * 2)


def _with_column(env, name):
    return env.rows.assign(**{name: 1.0})


def _reserved_key(name):
    return Case(f"train-key-named-{name}", "training",
                lambda e: train(e, _renamed(e, store=name), group_cols=[name, "item"]),
                (f"'{name}'", "name of a column manymodels writes", "withColumnRenamed"))


def _score_clash(name, single=False):
    def run(e):
        frame = e.sdf(_with_column(e, name))
        if single:
            return score_single(frame, e.single, feature_cols=FEATURES, passthrough_cols=[name])
        return score_per_group(frame, f"models:/{ROUTER}@champion", passthrough_cols=[name])
    return Case(f"score{'-single' if single else ''}-passthrough-named-{name}", "scoring", run,
                (repr(name), "name of a column scoring adds", "withColumnRenamed"))


# Found by the property tier (tests/property): names that clash with manymodels' own columns, names that differ
# only in case, and limits that take no NaN.
CASES += [
    *(_reserved_key(n) for n in ("status", "Status", "prediction", "count", "MODEL_VERSION", "error", "model")),
    Case("train-array-key", "training",
         lambda e: train(e, e.sdf().withColumn("tags", F.array("store", "item")), group_cols=["tags"]),
         ("'tags' is array<bigint>", "atomic types", "cast('string')")),
    Case("train-struct-key", "training",
         lambda e: train(e, e.sdf().withColumn("where", F.struct("store", "item")), group_cols=["where"]),
         ("'where' is struct<", "one key column per field")),
    Case("train-internal-prefix-column", "training",
         lambda e: train(e, _renamed(e, x1="_mm_bin"), feature_cols=["x0", "_mm_bin", "x2"]),
         ("'_mm_bin'", "'_mm_'", "rename")),
    Case("train-columns-differ-only-in-case", "training", lambda e: train(e, e.sdf(_case_twin(e))),
         ("'x1', 'X1'", "differ only in case", "rename or drop")),
    Case("train-feature-is-label", "training", lambda e: train(e, feature_cols=["x0", "y"]),
         ("'y'", "one role only", "drop them from feature_cols")),
    Case("train-max-model-bytes-zero", "training", lambda e: train(e, max_model_bytes=0), ("max_model_bytes",)),
    Case("train-max-model-bytes-over-arrow", "training", lambda e: train(e, max_model_bytes=3 << 30),
         ("max_model_bytes",)),
    Case("train-max-fit-seconds-negative", "training", lambda e: train(e, max_fit_seconds=-1),
         ("max_fit_seconds",)),
    Case("train-max-fit-seconds-nan", "training", lambda e: train(e, max_fit_seconds=float("nan")),
         ("max_fit_seconds",)),
    Case("train-holdout-fraction-one", "training", lambda e: train(e, holdout_fraction=1.0),
         ("holdout_fraction=1.0", "[0, 1)")),
    Case("train-failure-policy-typo", "training", lambda e: train(e, failure_policy="recrod"),
         ("failure_policy='recrod'", "'record'")),
    Case("train-unknown-setting", "training", lambda e: train(e, min_row=5), ("'min_row'", "expected one of")),
    Case("train-estimator-class-not-instance", "training", lambda e: train(e, estimator=LinearRegression),
         ("class LinearRegression", "LinearRegression()")),
    Case("train-no-group-cols", "training", lambda e: train(e, group_cols=[]), ("group_cols is empty",)),
    Case("train-missing-label", "training", lambda e: train(e, label_col="target"),
         ("'target'", "Missing input column", "Fix the column names")),
    Case("search-per-group-key-named-status", "tuning",
         lambda e: search_per_group(e.sdf(_renamed(e, store="status")), group_cols=["status", "item"],
                                    label_col="y", feature_cols=FEATURES, estimator=Ridge(),
                                    param_grid={"alpha": [1.0]}, cv=3, location=e.table_location),
         ("'status'", "name of a column manymodels writes")),
    *(_score_clash(n) for n in ("prediction", "Status", "model_version", "error")),
    *(_score_clash(n, single=True) for n in ("prediction", "STATUS")),
]


def notebook(name: str, **environ):
    """Run a notebook in this process as the local runner does, with MM_<WIDGET> parameters."""
    old = {k: os.environ.get(k) for k in environ}
    os.environ.update(environ)
    try:
        return runpy.run_path(str(ROOT / "notebooks" / name), run_name="__main__")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, env: Env, capsys):
    env.prepared = case.prepare(env) if case.prepare else None  # inputs are built before the snapshot
    sc = env.spark.sparkContext
    group = f"bad-input-{case.id}"
    before = snapshot(env.home)
    sc.setJobGroup(group, case.id)
    try:
        with pytest.raises(case.error) as caught:
            case.run(env)
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    jobs = list(sc.statusTracker().getJobIdsForGroup(group))
    after = snapshot(env.home)
    message = str(caught.value) + (capsys.readouterr().err if case.error is SystemExit else "")
    if case.error is SystemExit and caught.value.code != 2:  # a user error: exit code 2, as argparse's own
        problems_exit = [f"exit code {caught.value.code}, expected 2"]
    else:
        problems_exit = []
    problems = problems_exit + [f"message lacks {n!r}" for n in case.needles if n not in message]
    if len(jobs) > case.max_jobs:
        problems.append(f"{len(jobs)} Spark job(s) ran before the error (allowed {case.max_jobs})")
    problems += changes(before, after)
    assert not problems, f"{case.id}: {problems}\nmessage: {message}"


def test_catalogue_covers_every_area_and_the_required_inputs():
    areas = {c.area for c in CASES}
    assert areas == {"training", "tuning", "ensemble", "scoring", "job parameters"}
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    required = ("null-key", "duplicate-feature", "string-feature", "infinite-feature", "continuous-label",
                "one-row-group", "param-grid-typo", "unknown-alias", "missing-feature", "not-a-number")
    assert all(any(r in c.id for c in CASES) for r in required)


def test_one_row_group_under_record_is_skipped_with_a_reason_naming_it_and_the_fix(env, tmp_path):
    """The other side of ``train-one-row-group-raise``: with the default failure_policy='record' a group below
    min_rows does not stop the run; its row says why, which group, and what to do."""
    from manymodels.storage import model_table

    table = train(env, _one_row_group(env), location=str(tmp_path / "table"), training_run_id="catalogue-skip")
    rows = model_table.read(env.spark, str(tmp_path / "table")).toPandas()
    skipped = rows[rows["status"] == "skipped"]
    assert table.counts == {"ok": 6, "failed": 0, "skipped": 1}
    assert list(skipped[["store", "item"]].iloc[0]) == [999, 999]
    reason = skipped["error"].iloc[0]
    assert "1 rows with a label, fewer than min_rows=10" in reason and "group store=999, item=999" in reason
    assert "lower min_rows" in reason
