"""Job parameters cannot run arbitrary code or delete arbitrary paths (no Spark but the last test):
estimator / learner allow-list, the scores output's root and marker, numeric gates that refuse NaN."""
from __future__ import annotations

import sys
import textwrap
from types import SimpleNamespace

import pytest

from manymodels import jobs
from manymodels.core.estimators import load_estimator
from manymodels.core.spec import PanelSpec
from manymodels.errors import InputError
from manymodels.jobs.scores import SCORES_MARKER, check_output, output_roots
from manymodels.settings import ALLOWED_MODULES_ENV, OUTPUT_ROOT_ENV, project_home


@pytest.fixture
def side_effects(tmp_path, monkeypatch):
    """Importable modules on sys.path that leave a file behind when imported or instantiated."""
    proof = tmp_path / "ran"
    body = textwrap.dedent(f"""
        import pathlib
        pathlib.Path({str(proof)!r}, "import").parent.mkdir(exist_ok=True)
        pathlib.Path({str(proof)!r}, "import").touch()
        from sklearn.base import BaseEstimator

        class NotAnEstimator:
            def __init__(self):
                pathlib.Path({str(proof)!r}, "init").touch()

        class Good(BaseEstimator):
            def fit(self, X, y=None):
                return self
    """)
    for name in ("sklearnx", "mm_extra_models"):
        (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(ALLOWED_MODULES_ENV, raising=False)
    yield proof
    for name in ("sklearnx", "mm_extra_models"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("path", ["sklearnx.Good", "os.system", "builtins.eval", "mm_extra_models.Good",
                                  "subprocess.Popen"])
def test_a_module_outside_the_allow_list_is_refused_before_it_is_imported(side_effects, path):
    module = path.rsplit(".", 1)[0]
    already = module in sys.modules
    with pytest.raises(InputError, match=rf"estimator '{path}' is refused.*'sklearn', 'manymodels'.*"
                                         rf"{ALLOWED_MODULES_ENV}={module}"):
        load_estimator(path)
    assert not side_effects.exists(), "the module's code ran"
    assert (module in sys.modules) == already


@pytest.mark.parametrize("path", ["Ridge", "sklearn", "sklearn..Ridge", ".sklearn.Ridge",
                                  "sklearn.linear_model.Ridge()", "sklearn.linear_model.Ridge; import os",
                                  "\uff53klearn.linear_model.Ridge"])
def test_a_path_that_is_not_a_dotted_class_name_is_refused(path):
    with pytest.raises(InputError, match="dotted path|is refused"):
        load_estimator(path)


def test_allowed_classes_load(side_effects, monkeypatch):
    est, params = load_estimator("sklearn.linear_model.Ridge", '{"alpha": 0.5}')
    assert type(est).__name__ == "Ridge" and params == {"alpha": 0.5}
    assert type(load_estimator("manymodels.ensemble.FoldEnsembleClassifier")[0]).__name__ == "FoldEnsembleClassifier"
    assert type(load_estimator("mm_extra_models.Good", allowed_modules=("mm_extra_models",))[0]).__name__ == "Good"
    monkeypatch.setenv(ALLOWED_MODULES_ENV, "xgboost, mm_extra_models.")
    assert type(load_estimator("mm_extra_models.Good")[0]).__name__ == "Good"


def test_only_base_estimator_subclasses_are_instantiated(side_effects, monkeypatch):
    monkeypatch.setenv(ALLOWED_MODULES_ENV, "mm_extra_models")
    with pytest.raises(InputError, match=r"mm_extra_models.NotAnEstimator.*subclass of sklearn.base.BaseEstimator"):
        load_estimator("mm_extra_models.NotAnEstimator")
    assert not (side_effects / "init").exists(), "the class was instantiated"
    for path, found in [("sklearn.datasets.make_regression", "a function, not a class"),
                        ("sklearn.utils.Bunch", "the class sklearn.utils._bunch.Bunch"),
                        ("sklearn.linear_model", "a module, not a class"),
                        ("manymodels.jobs.load_estimator", "a function, not a class")]:
        with pytest.raises(InputError, match=found):
            load_estimator(path)


def test_a_typo_in_an_allowed_module_and_bad_params_are_named():
    with pytest.raises(InputError, match="'sklearn.linear_model.Ridg' cannot be imported"):
        load_estimator("sklearn.linear_model.Ridg")
    with pytest.raises(InputError, match="are a list: expected a JSON object"):
        load_estimator("sklearn.linear_model.Ridge", "[1, 2]")
    with pytest.raises(InputError, match="not a dotted module path"):
        load_estimator("sklearn.linear_model.Ridge", allowed_modules=("not a module",))


# ---------------------------------------------------------------- scores output

@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.delenv(OUTPUT_ROOT_ENV, raising=False)
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    root = tmp_path / "scores_root"
    root.mkdir()
    return root


def test_table_names_and_new_folders_inside_the_root_are_accepted(roots):
    assert check_output("main.sch.scores", roots=[roots]) == "main.sch.scores"
    assert check_output(str(roots / "new" / "scores"), roots=[roots]) == str((roots / "new" / "scores").resolve())
    (roots / "empty").mkdir()  # what an interrupted overwrite leaves: nothing to lose
    assert check_output(str(roots / "empty"), roots=[roots])
    marked = roots / "previous"
    (marked / "score_date=2026-01-02").mkdir(parents=True)  # scores filed by date, the marker at the root
    (marked / "score_date=2026-01-02" / "part-0.parquet").write_bytes(b"x")
    jobs.write_scores_marker(str(marked), model_version="m/3", rows=1, score_date="2026-01-02")
    assert check_output(str(marked), roots=[roots]) == str(marked.resolve())


@pytest.mark.parametrize("marker", ['{"model_version": "m/3", "rows": 1}', None])
def test_scores_written_before_dates_are_refused_with_the_fix(roots, marker):
    """The old layout: Parquet files at the folder's root and a marker without the partitioning."""
    old = roots / "old_scores"
    old.mkdir()
    (old / "part-0.parquet").write_bytes(b"x")
    if marker is None:
        jobs.write_scores_marker(str(old), model_version="m/3", rows=1)  # a new marker cannot vouch for them
    else:
        (old / SCORES_MARKER).write_text(marker)
    with pytest.raises(InputError, match=rf"output_table='{old}'.*part-0.parquet.*not only score_date "
                                         rf"partitions.*Fix: pass a new output_table, or move the old scores away"):
        check_output(str(old), roots=[roots])
    assert (old / "part-0.parquet").read_bytes() == b"x"


def test_a_folder_without_the_marker_is_refused_and_kept(roots):
    precious = roots / "data"
    precious.mkdir()
    (precious / "keep.csv").write_text("a,b\n")
    with pytest.raises(InputError, match=rf"output_table='{precious}'.*no {SCORES_MARKER} marker.*keep.csv"):
        check_output(str(precious), roots=[roots])
    (roots / "file.txt").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        check_output(str(roots / "file.txt"), roots=[roots])
    assert (precious / "keep.csv").exists()


@pytest.mark.parametrize("relative", ["../elsewhere", "a/../../elsewhere", ".", "/etc", "/tmp/x"])
def test_a_path_outside_the_root_is_refused(roots, relative):
    path = relative if relative.startswith("/") else str(roots) + "/" + relative
    with pytest.raises(InputError, match=rf"output_table='{path}'.*not inside an output root.*{OUTPUT_ROOT_ENV}"):
        check_output(path, roots=[roots])


def test_a_symbolic_link_out_of_the_root_and_uris_are_refused(roots, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (roots / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InputError, match="not inside an output root"):
        check_output(str(roots / "link"), roots=[roots])
    for uri in ("s3://bucket/scores", "dbfs:/tmp/scores", "file:///tmp/scores"):
        with pytest.raises(InputError, match="is a URI"):
            check_output(uri, roots=[roots])


def test_the_output_may_not_hold_the_input(roots):
    (roots / "in").mkdir()
    with pytest.raises(InputError, match="overlaps input_path"):
        check_output(str(roots / "in"), roots=[roots], input_path=str(roots / "in" / "part.parquet"))


def test_output_roots_come_from_the_environment_or_the_place(roots, monkeypatch, tmp_path):
    assert output_roots() == (project_home() / "scores",)
    monkeypatch.setenv(OUTPUT_ROOT_ENV, f"{tmp_path / 'a'}, {tmp_path / 'b'}")
    assert output_roots() == (tmp_path / "a", tmp_path / "b")
    assert check_output(str(tmp_path / "b" / "out"))
    monkeypatch.delenv(OUTPUT_ROOT_ENV)
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    assert [str(r) for r in output_roots("cat.sch.router")] == ["/Volumes/cat/sch"]
    assert output_roots("router") == ()  # not a Unity Catalog name: table names only
    with pytest.raises(InputError, match=r"roots: none \(table names only\)"):
        check_output("/Volumes/cat/sch/vol/scores", model_name="router")
    with pytest.raises(InputError, match="not inside an output root"):
        check_output("/Volumes/other/sch/vol/scores", model_name="cat.sch.router")


def test_batch_score_refuses_before_reading_or_scoring(roots, tmp_path, monkeypatch):
    """spark=None: the refusal comes before any Spark, MLflow or input work."""
    precious = project_home() / "scores" / "precious"
    precious.mkdir(parents=True, exist_ok=True)
    (precious / "keep.txt").write_text("x")
    (tmp_path / "in").mkdir()
    monkeypatch.setattr("manymodels.tracking.configure", lambda **kw: pytest.fail("configure called"))
    with pytest.raises(InputError, match="not a previous scores output"):
        jobs.batch_score(None, input_path=str(tmp_path / "in"), output_table=str(precious))
    with pytest.raises(InputError, match="not inside an output root"):
        jobs.batch_score(None, input_path=str(tmp_path / "in"), output_table=str(tmp_path / "elsewhere"))
    assert (precious / "keep.txt").read_text() == "x"


# ---------------------------------------------------------------- numeric gates

@pytest.mark.parametrize("fraction", [float("nan"), float("inf"), -0.1, 1.5])
def test_prepare_data_refuses_a_holdout_fraction_that_is_not_in_range(tmp_path, fraction):
    with pytest.raises(InputError, match="holdout_fraction"):
        jobs.prepare_data(PanelSpec(n_groups=3, mean_rows=20), tmp_path / "panel", holdout_fraction=fraction)
    assert not (tmp_path / "panel").exists()


# ---------------------------------------------------------------- with Spark: the marker is written and honoured

def test_batch_score_writes_the_marker_and_overwrites_only_marked_folders(spark, monkeypatch, tmp_path):
    rows = spark.createDataFrame([("a", 1.0, "ok", "m/1"), ("b", None, "no_model", "m/1")],
                                 "store string, prediction double, status string, model_version string")
    monkeypatch.setattr("manymodels.api.score_per_group", lambda df, uri, **kw: rows)
    monkeypatch.setattr("manymodels.tracking.configure", lambda **kw: None)
    monkeypatch.setattr("manymodels.jobs.steps.registered_version",
                        lambda uri: SimpleNamespace(name="m", version="1", run_id="r1", tags={}))
    monkeypatch.delenv(OUTPUT_ROOT_ENV, raising=False)
    source = tmp_path / "input"
    spark.createDataFrame([("a", 1.0)], "store string, x double").write.parquet(str(source))
    out = project_home() / "scores" / "marker_test"
    first = jobs.batch_score(spark, input_path=str(source), output_table=str(out), score_date="2026-01-01")
    assert first.statuses == {"ok": 1, "no_model": 1} and first.model_version == "m/1"
    marker = out / SCORES_MARKER
    assert '"model_version": "m/1"' in marker.read_text() and '"partitioned_by": "score_date"' in marker.read_text()
    again = jobs.batch_score(spark, input_path=str(source), output_table=str(out), score_date="2026-01-01")
    assert again.rows == 2  # marked: the date is replaced, not appended to
    assert spark.read.parquet(str(out)).count() == 2 and marker.exists()
    other = project_home() / "scores" / "not_scores"
    other.mkdir(parents=True, exist_ok=True)
    (other / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="not a previous scores output"):
        jobs.batch_score(spark, input_path=str(source), output_table=str(other))
    assert (other / "keep.txt").read_text() == "x"
