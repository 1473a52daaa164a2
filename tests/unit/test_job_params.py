"""Every job parameter is declared once, in manymodels/jobs/params.py: the command line's options, the notebooks'
widgets, the bundle jobs' parameters and the job functions' keyword defaults agree with it (names and defaults),
and every parameter says what it does. Also the command's behaviour on a user error: message, exit code 2, no
traceback unless --debug."""
from __future__ import annotations

import argparse
import ast
import inspect
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from manymodels.databricks import notebook
from manymodels.errors import InputError
from manymodels.jobs import cli
from manymodels.jobs import params as P
from manymodels.jobs.params import COMMANDS, JOB_DEFAULTS, JOB_KEYS, JOB_ONLY_PARAMS, job_params, to_text
from manymodels.settings import VERSION

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
JOB_FILES = sorted((ROOT / "resources").glob("*.job.yml"))
PARAMS = [(c.name, p) for c in COMMANDS.values() for p in c.params]
JOB_REF = "{{job.parameters.%s}}"


def run_cli(*argv, home: Path):
    env = {**os.environ, "MANYMODELS_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "manymodels.jobs.cli", *argv], capture_output=True, text=True,
                          env=env, cwd=home, timeout=300)


# ---------------------------------------------------------------- the declarations themselves

@pytest.mark.parametrize("command, param", PARAMS, ids=[f"{c}:{p.name}" for c, p in PARAMS])
def test_each_param_is_declared_completely(command, param):
    assert param.name.isidentifier() and param.name == param.name.lower()
    assert param.type in P.TYPES
    assert len(param.help) > 10, f"{command} {param.name}: no help text"
    if param.choices and param.default is not None:
        assert param.default in param.choices
    if param.default is not None and not param.repeat:
        assert param.parse(param.text) == param.value, "the default does not survive its own text"


def test_a_command_never_declares_a_name_twice():
    for command in COMMANDS.values():
        names = [p.name for p in command.params]
        assert len(names) == len(set(names)), command.name
        flags = [f for p in command.params for f in p.flags]
        assert len(flags) == len(set(flags)), command.name


def test_vocabularies_are_the_code_s_own():
    from manymodels.core import folds, model_bytes, retrain, schema, spec
    from manymodels.spark import inputs

    assert P.RETRAIN_MODES == retrain.RETRAIN_MODES
    assert set(P.FAILURE_POLICIES) == set(spec.FAILURE_POLICIES)
    assert P.SAMPLINGS == folds.SAMPLINGS and P.COMBINES == folds.COMBINES
    assert P.MODEL_FORMATS == model_bytes.MODEL_FORMATS
    assert P.GATE_METRICS == schema.METRIC_COLUMNS
    assert set(P.INPUT_FORMATS) == set(inputs.FORMATS)
    assert P.SIZE_DISTRIBUTIONS == typing.get_args(typing.get_type_hints(spec.PanelSpec)["size_distribution"])


@pytest.mark.parametrize("text, expected", [("", None), ("1000", 1000), (" 1_000 ", 1000)])
def test_values_parse_from_widget_text(text, expected):
    assert P.N_GROUPS.but(default=None).parse(text) == expected


def declared(command: str, name: str) -> P.Param:
    return next(p for p in COMMANDS[command].params if p.name == name)


@pytest.mark.parametrize("command, name, text, needle", [
    ("prepare", "n_groups", "ten", "n_groups='ten': expected an integer"),
    ("prepare", "n_groups", "0", "n_groups=0: expected at least 1"),
    ("score", "shuffle", "maybe", "shuffle='maybe': expected true or false"),
    ("score", "model_cache_mb", "lots", "model_cache_mb='lots': expected a positive number of megabytes"),
    ("train", "estimator_params", "{alpha: 1}", "estimator_params='{alpha: 1}' is not JSON"),
    ("prepare", "layout", "zip", "layout='zip': expected one of parquet, gzip, both"),
    ("prune", "min_age_hours", "nan", "min_age_hours='nan': expected a finite number"),
    ("workspace promote", "min_ok_fraction", "1.5", "min_ok_fraction='1.5': expected a number between 0 and 1"),
    ("workspace promote", "model_name", " ", "model_name is empty: expected a value"),
    ("promote", "metric", "holdout_mape", "metric='holdout_mape': expected a metric column"),
    ("promote", "max_median_worse", "-0.1", "max_median_worse=-0.1: expected at least 0.0"),
    ("promote", "max_worse_fraction", "2", "max_worse_fraction='2': expected a number between 0 and 1"),
])
def test_a_bad_value_is_an_input_error_naming_the_parameter(command, name, text, needle):
    with pytest.raises(InputError) as caught:
        declared(command, name).parse(text)
    assert needle in str(caught.value)


def test_parse_all_types_the_widget_texts_and_fills_in_defaults():
    values = P.parse_all(job_params("train"), {"group_cols": "a, b", "estimator_params": '{"alpha": 1}',
                                               "experiment": ""})
    assert values["group_cols"] == ["a", "b"] and values["estimator_params"] == {"alpha": 1}
    assert values["experiment"] is None and values["feature_cols"] == ["x0", "x1", "x2", "x3", "x4"]
    assert P.as_texts(job_params("train"), values)["group_cols"] == "a,b"


# ---------------------------------------------------------------- the command line derives from them

def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for word in name.split():
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
    return parser


@pytest.mark.parametrize("name", list(COMMANDS))
def test_cli_options_are_the_declared_params(name):
    actions = {a.dest: a for a in subparser(cli._parser(), name)._actions if a.dest not in ("help", "debug")}
    declared = {p.name: p for p in COMMANDS[name].params}
    assert set(actions) == set(declared)
    for dest, action in actions.items():
        param = declared[dest]
        negative = ["--no-" + param.name.replace("_", "-")] if param.type == "bool" else []
        assert action.option_strings == [*param.flags, *negative]
        assert action.default == param.value and action.required == param.required
        assert (action.choices and list(action.choices)) == (list(param.choices) or None)
        assert param.help in action.help
        assert "(default: " in action.help or "(required)" in action.help or "(empty: " in action.help


def test_dashed_and_underscored_spellings_parse_to_the_same_value():
    parse = cli._parser().parse_args
    dashed, underscored = parse(["train", "--group-cols", "a,b"]), parse(["train", "--group_cols", "a,b"])
    assert dashed.group_cols == underscored.group_cols == ["a", "b"]
    assert vars(dashed) == vars(underscored)
    for name, param in PARAMS:
        if "_" in param.name and not param.positional:
            assert param.flags[:2] == ("--" + param.name.replace("_", "-"), "--" + param.name), name


@pytest.mark.parametrize("argv, expected", [(["--shuffle"], True), (["--no-shuffle"], False),
                                            (["--shuffle=false"], False), (["--shuffle", "false"], False),
                                            (["--shuffle=true"], True), ([], True)])
def test_booleans_are_flags_and_take_true_or_false(argv, expected):
    assert cli._parser().parse_args(["score", *argv]).shuffle is expected


def test_the_cli_gives_tune_and_score_the_notebooks_widget_texts(monkeypatch):
    from manymodels.jobs import steps
    from manymodels.studies import tuning

    calls = {}

    class Report:
        def summary(self):
            return "ok"

    def recorder(name):
        def step(spark, **kwargs):
            calls[name] = kwargs
            return Report()
        return step

    monkeypatch.setattr(cli, "_spark", lambda args: None)
    monkeypatch.setattr(tuning, "tune", recorder("tune"))
    monkeypatch.setattr(steps, "batch_score", recorder("score"))
    assert cli.main(["tune", "--cv", "5", "--group_cols", "store"]) == 0
    assert cli.main(["score", "--no-shuffle", "--passthrough-cols", "y"]) == 0
    texts = {name: {p.name: p.text for p in job_params(name)} for name in ("tune", "score")}
    assert calls["tune"] == {**texts["tune"], "cv": "5", "group_cols": "store"}
    assert calls["score"] == {**texts["score"], "shuffle": "false", "passthrough_cols": "y"}


def test_version(tmp_path):
    done = run_cli("--version", home=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == f"manymodels {VERSION}"


def test_a_bad_value_exits_2_with_the_message_and_no_traceback(tmp_path):
    done = run_cli("prepare", "--n_groups", "ten", home=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "argument --n_groups: n_groups='ten': expected an integer" in done.stderr
    assert "Traceback" not in done.stderr and not done.stdout


@pytest.mark.parametrize("argv", [("--debug", "prepare", "--n-groups", "ten"), ("prepare", "--n-groups", "ten",
                                                                                 "--debug")])
def test_debug_shows_the_traceback(tmp_path, argv):
    done = run_cli(*argv, home=tmp_path)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "InputError: argument --n-groups: n_groups='ten'" in done.stderr


def test_an_input_error_of_a_command_exits_2_before_spark_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MANYMODELS_HOME", str(tmp_path))
    monkeypatch.setattr(cli, "_spark", lambda args: pytest.fail("Spark started before the input was checked"))
    with pytest.raises(SystemExit) as exited:
        cli.main(["train"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("manymodels: error: No input at") and "manymodels prepare" in err
    with pytest.raises(InputError, match="No input at"):
        cli.main(["train", "--debug"])


# ---------------------------------------------------------------- the notebooks' widgets derive from them

def widget_command(path: Path) -> str | None:
    """``<command>`` of the notebook's ``widgets(job_params("<command>"))``; None if it declares widgets otherwise."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "widgets":
            arg = node.args[0]
            if isinstance(arg, ast.Call) and getattr(arg.func, "id", None) == "job_params":
                return arg.args[0].value
    return None


class FakeDbutils:
    """``dbutils.widgets``: records the declarations; a widget's value is its default."""

    def __init__(self):
        self.declared = {}
        self.widgets = self

    def text(self, name, default, label):
        assert label, f"{name}: no label"
        self.declared[name] = ("text", default, None)

    def dropdown(self, name, default, choices, label):
        assert default in choices, f"{name}: a dropdown's default must be one of its choices"
        assert label, f"{name}: no label"
        self.declared[name] = ("dropdown", default, list(choices))

    def get(self, name):
        return self.declared[name][1]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_widgets_are_the_command_s_job_params(path, monkeypatch):
    command = widget_command(path)
    assert command in COMMANDS, f"{path.name}: widgets not declared as widgets(job_params(...))"
    assert "dbutils.widgets" not in path.read_text()
    fake = FakeDbutils()
    monkeypatch.setattr(notebook, "_dbutils", lambda: fake)
    values = notebook.widgets(job_params(command))
    def choices(p):
        options = list(p.choices) or (["true", "false"] if p.type == "bool" else [])
        return options if p.text in options else []  # an empty default of an enumerated parameter: a text box

    expected = {p.name: ("dropdown" if choices(p) else "text", p.text, choices(p) or None)
                for p in job_params(command)}
    assert fake.declared == expected and values == {p.name: p.text for p in job_params(command)}


def test_widgets_outside_databricks_are_the_defaults_or_mm_variables(monkeypatch):
    monkeypatch.setattr(notebook, "_dbutils", lambda: None)
    for p in job_params("score"):
        monkeypatch.delenv(f"MM_{p.name.upper()}", raising=False)
    monkeypatch.setenv("MM_SHUFFLE", "false")
    assert notebook.widgets(job_params("score")) == {**{p.name: p.text for p in job_params("score")},
                                                    "shuffle": "false"}
    assert notebook.widgets({"a": 1}) == {"a": "1"}


# ---------------------------------------------------------------- the bundle jobs' parameters agree with them

def job_file_tasks(doc: dict, key: str):
    """Every task of job ``key`` in a job file: the root definition's and each target's."""
    roots = [doc] + [t for t in (doc.get("targets") or {}).values()]
    for root in roots:
        job = ((root.get("resources") or {}).get("jobs") or {}).get(key) or {}
        yield from job.get("tasks") or []


def task_command(task: dict) -> str | None:
    if "python_wheel_task" in task:
        argv = task["python_wheel_task"]["parameters"]
        return " ".join(argv[:2]) if argv[0] == "workspace" else argv[0]
    if "notebook_task" in task:
        return widget_command((ROOT / "resources" / task["notebook_task"]["notebook_path"]).resolve())
    return None


JOBS = [(path, key) for path in JOB_FILES for key in yaml.safe_load(path.read_text())["resources"]["jobs"]]


def job_file(path: Path, key: str) -> tuple[dict, dict]:
    doc = yaml.safe_load(path.read_text())
    return doc, doc["resources"]["jobs"][key]


@pytest.mark.parametrize("path, key", JOBS, ids=[f"{path.name}:{key}" for path, key in JOBS])
def test_job_parameters_are_the_commands_params(path, key):
    doc, job = job_file(path, key)
    assert key in JOB_KEYS
    tasks = [t for t in job_file_tasks(doc, key) if task_command(t)]
    commands = {task_command(t) for t in tasks}
    assert commands and commands <= set(COMMANDS), f"{key}: {commands}"
    declared = {name: [p for c in commands for p in COMMANDS[c].params if p.name == name]
                for name in {p.name for c in commands for p in COMMANDS[c].params}}
    for parameter in job["parameters"]:
        name, default = parameter["name"], str(parameter["default"])
        if name in JOB_ONLY_PARAMS.get(key, {}):  # read by the job's own condition task
            continue
        assert declared.get(name), f"{key}: job parameter {name!r} is no parameter of {sorted(commands)}"
        assert not any(p.cli_only for p in declared[name]), f"{key}: {name!r} is a command-line-only option"
        if "${" in default or "{{" in default:  # a bundle variable or resource, or the run's own value: decided later
            continue
        if name in JOB_DEFAULTS[key]:
            assert default == JOB_DEFAULTS[key][name], f"{key}: {name}"
            assert any(p.text != default for p in declared[name]), f"{key}: {name} overrides nothing"
        else:
            assert {p.text for p in declared[name]} == {default}, f"{key}: {name}'s default differs from params.py"
    assert set(JOB_DEFAULTS[key]) <= {p["name"] for p in job["parameters"]}


@pytest.mark.parametrize("path, key", JOBS, ids=[f"{path.name}:{key}" for path, key in JOBS])
def test_tasks_pass_the_command_s_params_under_their_names(path, key):
    doc, _ = job_file(path, key)
    for task in job_file_tasks(doc, key):
        command = task_command(task)
        if "notebook_task" in task:  # the job parameters are pushed down as its widgets (test_bundle.py)
            assert "base_parameters" not in task["notebook_task"], f"{key}.{task['task_key']}"
        elif "python_wheel_task" in task:
            flags = {f: p for p in COMMANDS[command].params for f in p.flags}
            for arg in task["python_wheel_task"]["parameters"][len(command.split()):]:
                option, _, value = arg.partition("=")
                assert option in flags and not flags[option].cli_only, f"{key}.{task['task_key']}: {arg}"
                # a model name may be composed from the catalog and schema parameters: catalog.schema.model_name
                composed = ".".join(JOB_REF % n for n in ("catalog", "schema", flags[option].name))
                assert value in (JOB_REF % flags[option].name, composed), f"{key}.{task['task_key']}: {arg}"


def test_every_bundle_job_is_declared():
    assert {key for _, key in JOBS} == set(JOB_KEYS) == set(JOB_DEFAULTS)


# ---------------------------------------------------------------- the job functions' keyword defaults agree

def compared_defaults(function, command: str, renames: dict[str, str] | None = None) -> list[str]:
    """Names whose keyword default in ``function`` means the declared default (its text parses to the same value);
    fails on a difference."""
    renames = renames or {}
    declared = {p.name: p for p in COMMANDS[command].params}
    compared = []
    for arg, parameter in inspect.signature(function).parameters.items():
        name = renames.get(arg, arg)
        if name in declared and parameter.default is not inspect.Parameter.empty:
            param = declared[name]
            assert param.parse(to_text(parameter.default)) == param.parse(param.text), \
                f"{function.__name__}({arg}={parameter.default!r}) vs {command} {name}={param.text!r}"
            compared.append(name)
    return compared


def test_job_functions_defaults_are_the_declared_ones():
    from manymodels.core.promotion import GateThresholds
    from manymodels.core.spec import PanelSpec
    from manymodels.databricks import workspace
    from manymodels.jobs import steps
    from manymodels.storage import model_table
    from manymodels.studies.fold_ensemble import run_study
    from manymodels.studies.tuning import tune
    from manymodels.tracking import promotion

    assert set(compared_defaults(tune, "tune")) == {p.name for p in job_params("tune")}
    assert set(compared_defaults(run_study, "ensemble")) == {p.name for p in job_params("ensemble")}
    assert set(compared_defaults(steps.batch_score, "score")) == {p.name for p in job_params("score")}
    assert compared_defaults(steps.run_main, "main") == ["n_groups", "mean_rows", "estimator", "master"]
    # params=None means no estimator parameters, as {} does; group, feature and label columns have no default
    assert set(compared_defaults(steps.train_and_register, "train",
                                 {"location": "model_table", "fmt": "format", "params": "-"})) == {
        "model_name", "alias", "experiment", "model_table", "format", "failure_policy", "training_run_id", "retrain",
        "model_format", "trusted_types", "params_from"}
    assert compared_defaults(steps.prepare_data, "prepare", {"out_dir": "output_dir"}) == ["output_dir", "layout"]
    assert compared_defaults(PanelSpec, "prepare") == ["n_groups", "mean_rows", "size_distribution", "seed"]
    assert compared_defaults(model_table.prune, "prune") == ["keep", "min_age_hours"]
    assert compared_defaults(workspace.ensure_schema_and_volume, "workspace setup") == ["catalog", "schema", "volume"]
    assert compared_defaults(workspace.upload, "workspace upload") == ["overwrite"]
    assert compared_defaults(workspace.find_job, "workspace run") == ["target"]
    assert compared_defaults(workspace.run_job, "workspace run", {"timeout_s": "timeout"}) == ["only", "wait",
                                                                                               "timeout"]
    gate = {"alias", "champion_alias", "min_ok_fraction", "metric", "max_median_worse", "max_worse_fraction",
            "min_shared_fraction", "dry_run"}
    assert set(compared_defaults(workspace.promote, "workspace promote")) == gate
    assert set(compared_defaults(promotion.promote, "promote", {"name": "model_name"})) == gate
    assert set(compared_defaults(GateThresholds, "promote")) == {"min_ok_fraction", "max_median_worse",
                                                                  "max_worse_fraction", "min_shared_fraction"}


# ---------------------------------------------------------------- the documentation lists them

def test_configuration_page_lists_every_command_and_option():
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert P.markdown() in text, "docs/configuration.md: paste `python -m manymodels.jobs.params`'s tables"
    missing = [f"{name} {p.flags[0]}" for name, p in PARAMS if not p.positional and f"`{p.flags[0]}`" not in text]
    missing += [name for name in COMMANDS if f"`manymodels {name}" not in text]
    assert not missing, f"docs/configuration.md lacks {missing}"
