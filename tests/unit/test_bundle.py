"""Offline checks of the Databricks Asset Bundle: databricks.yml and resources/*.yml.

The Databricks CLI's bundle JSON schema (vendored, gzipped, in tests/fixtures) checks the shape of each
file, of the merged bundle and of every target. The ``*_problems`` functions check what the CLI
enforces beyond that schema; each returns a list of messages, empty when all is well, and a
negative test proves each can fail. No Spark, no network.
"""
from __future__ import annotations

import copy
import gzip
import json
import re
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.validators import Draft202012Validator, validator_for

from manymodels.jobs.params import JOB_ONLY_PARAMS, job_params

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE_FILE = REPO_ROOT / "databricks.yml"
# The schema `databricks bundle schema` prints, vendored so the tests need nothing outside the repository.
SCHEMA_FILE = REPO_ROOT / "tests" / "fixtures" / "databricks-bundle.schema.json.gz"

NOTEBOOK_HEADER = "# Databricks notebook source"
MODES = ("development", "production")
# Target keys that are not overrides of the root configuration.
TARGET_ONLY_KEYS = ("default", "mode")
# Target keys the CLI moves under `bundle`.
TARGET_BUNDLE_KEYS = ("cluster_id", "compute_id", "git")
# Job lists whose entries the CLI merges by key after applying target overrides.
KEYED_JOB_LISTS = {"tasks": "task_key", "job_clusters": "job_cluster_key", "parameters": "name"}
PAUSABLE_JOB_FIELDS = ("schedule", "trigger", "continuous")

# The command each notebook runs; its widgets are that command's job parameters (manymodels/jobs/params.py). A job
# sets them through its job parameters, which Databricks pushes down to every notebook task under the same names
# (https://docs.databricks.com/en/jobs/job-parameters.html), so a job must declare each widget of its notebooks.
NOTEBOOK_COMMANDS = {"01_prepare_data.py": "prepare", "02_train_per_group.py": "train",
                     "03_tune_hyperparameters.py": "tune", "04_fold_ensemble.py": "ensemble",
                     "05_batch_inference.py": "score"}
NOTEBOOK_WIDGETS = {notebook: {p.name for p in job_params(command)} for notebook, command in NOTEBOOK_COMMANDS.items()}

VAR_REF = re.compile(r"\$\{var\.([\w-]+)")
JOB_PARAMETER_REF = re.compile(r"\{\{\s*job\.parameters\.([\w-]+)\s*\}\}")

# Python's `re` has no \p{...}; these are the closest equivalents for str patterns.
UNICODE_PROPERTIES = {"L": r"[^\W\d_]", "N": r"\d"}
UNICODE_ESCAPE = re.compile(r"\\p\{(\w+)\}")


# ---------------------------------------------------------------- schema patterns for Python's re

def python_pattern(pattern: str) -> str:
    r"""Rewrite the ``\p{L}`` / ``\p{N}`` escapes of a schema pattern into ones ``re`` supports.

    Outside a character class ``\p{L}`` becomes ``[^\W\d_]`` and ``\p{N}`` becomes ``\d``; a
    class holding them, like ``[\p{L}\p{N}-]``, becomes an alternation ``(?:[-]|[^\W\d_]|\d)``.
    """
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "[":
            end = _class_end(pattern, i)
            out.append(_rewrite_class(pattern[i:end]))
            i = end
        elif match := UNICODE_ESCAPE.match(pattern, i):
            out.append(_unicode_property(match[1]))
            i = match.end()
        else:
            step = 2 if pattern[i] == "\\" else 1
            out.append(pattern[i:i + step])
            i += step
    return "".join(out)


def _unicode_property(name: str) -> str:
    if name not in UNICODE_PROPERTIES:
        raise ValueError(f"\\p{{{name}}} has no Python translation: add one to UNICODE_PROPERTIES.")
    return UNICODE_PROPERTIES[name]


def _class_end(pattern: str, start: int) -> int:
    """Index just past the `]` closing the character class opened at `start`."""
    i = start + 1
    i += pattern.startswith("^", i)
    i += pattern.startswith("]", i)  # a leading ] is a literal
    while i < len(pattern):
        if pattern[i] == "]":
            return i + 1
        i += 2 if pattern[i] == "\\" else 1
    raise ValueError(f"Unterminated character class in pattern {pattern!r}.")


def _rewrite_class(char_class: str) -> str:
    names = UNICODE_ESCAPE.findall(char_class)
    if not names:
        return char_class
    if char_class.startswith("[^"):
        raise ValueError(f"Negated class with \\p{{...}} is not supported: {char_class!r}.")
    rest = UNICODE_ESCAPE.sub("", char_class[1:-1])
    alternatives = [f"[{rest}]"] if rest else []
    alternatives += [_unicode_property(name) for name in dict.fromkeys(names)]
    return "(?:" + "|".join(alternatives) + ")"


def with_python_patterns(node):
    """A copy of a JSON schema with every "pattern" string rewritten by `python_pattern`."""
    if isinstance(node, dict):
        return {key: python_pattern(value) if key == "pattern" and isinstance(value, str)
                else with_python_patterns(value) for key, value in node.items()}
    if isinstance(node, list):
        return [with_python_patterns(value) for value in node]
    return node


def schema_errors(validator, instance) -> list[str]:
    """One line per schema violation, at the deepest place it can be pinned to."""
    errors = (leaf for error in validator.iter_errors(instance) for leaf in leaf_errors(error))
    return [f"{error.json_path}: {error.message}"[:400] for error in errors]


def leaf_errors(error: ValidationError) -> Iterator[ValidationError]:
    """The causes of an error: in a oneOf/anyOf, follow the only branch whose type fits the instance.

    Every object in the schema is `oneOf: [object, "${var...}" string]`, so the error at the top
    of a bad bundle is one "not valid under any of the given schemas" hiding all the causes.
    """
    branches = defaultdict(list)
    for cause in error.context or ():
        branches[cause.relative_schema_path[0]].append(cause)
    fitting = [causes for causes in branches.values()
               if not any(cause.validator == "type" and not cause.relative_path for cause in causes)]
    if len(fitting) > 1:  # a string fitting several branches: prefer those that are not "${...}" patterns
        fitting = [causes for causes in fitting if any(cause.validator != "pattern" for cause in causes)]
    if len(fitting) != 1:
        yield best_match([error])
        return
    for cause in fitting[0]:
        yield from leaf_errors(cause)


# ---------------------------------------------------------------- loading and merging like the CLI

def load_yaml(path: Path) -> dict:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def included_files(root: dict) -> list[Path]:
    """Files matched by the `include` globs of databricks.yml, in the CLI's (sorted) order."""
    files = [path for pattern in root.get("include", []) for path in sorted(REPO_ROOT.glob(pattern))]
    return list(dict.fromkeys(files))


def merge(base, override):
    """Merge like the Databricks CLI: maps recursively, lists concatenated, other values replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list):
        return base + override
    return override


def merged_bundle() -> dict:
    """databricks.yml merged with every file its `include` globs match."""
    root = load_yaml(BUNDLE_FILE)
    merged = root
    for path in included_files(root):
        merged = merge(merged, load_yaml(path))
    return copy.deepcopy(merged)


def target_bundle(bundle: dict, name: str) -> dict:
    """The bundle as deployed to one target: that target's overrides merged on top of the root.

    A target variable given as a plain value is shorthand for its default (no complex variables here).
    """
    target = {k: v for k, v in bundle["targets"][name].items() if k not in TARGET_ONLY_KEYS}
    moved = {key: target.pop(key) for key in TARGET_BUNDLE_KEYS if key in target}
    if moved:
        target["bundle"] = merge(target.get("bundle", {}), moved)
    if "variables" in target:
        target["variables"] = {var: value if isinstance(value, dict) else {"default": value}
                               for var, value in target["variables"].items()}
    root = {k: v for k, v in bundle.items() if k != "targets"}
    return merge_keyed_job_lists(copy.deepcopy(merge(root, target)))


def merge_keyed_job_lists(bundle: dict) -> dict:
    """Merge job tasks, clusters and parameters sharing a key, as the CLI does after target overrides."""
    for job in jobs(bundle).values():
        for field, key in KEYED_JOB_LISTS.items():
            by_key: dict = {}
            for entry in job.get(field, []):
                k = entry.get(key)
                by_key[k] = merge(by_key[k], entry) if k in by_key else entry
            if field in job:
                job[field] = list(by_key.values())
    return bundle


def jobs(bundle: dict) -> dict:
    return (bundle.get("resources") or {}).get("jobs") or {}


def strings(node) -> Iterator[str]:
    """Every string value anywhere in a parsed YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def notebook_tasks(node) -> Iterator[dict]:
    """Every mapping holding a `notebook_path` (a notebook task), anywhere in a document."""
    if isinstance(node, dict):
        if isinstance(node.get("notebook_path"), str):
            yield node
        for value in node.values():
            yield from notebook_tasks(value)
    elif isinstance(node, list):
        for value in node:
            yield from notebook_tasks(value)


def notebook_file(yaml_file: Path, notebook_path: str) -> Path:
    """A notebook_path resolved like the CLI: relative to the declaring file, `.py` if no suffix."""
    path = (yaml_file.parent / notebook_path).resolve()
    return path if path.suffix else path.with_suffix(".py")


# ---------------------------------------------------------------- checks the schema does not make

def target_problems(bundle: dict) -> list[str]:
    targets = bundle.get("targets") or {}
    problems = [f"target {name!r}: mode {target.get('mode')!r} is not one of {MODES}"
                for name, target in targets.items() if target.get("mode") not in MODES]
    defaults = [name for name, target in targets.items() if target.get("default") is True]
    if len(defaults) != 1:
        problems.append(f"expected exactly one target with `default: true`, found {defaults}")
    problems += [f"target {name!r}: mode production needs workspace.root_path (one deployment per target)"
                 for name, target in targets.items() if target.get("mode") == "production"
                 and not (target_bundle(bundle, name).get("workspace") or {}).get("root_path")]
    return problems


def schedule_problems(bundle: dict) -> list[str]:
    """Development mode only pauses schedules and triggers whose pause_status is unset."""
    return [f"job {name!r}: {field}.pause_status is {job[field]['pause_status']!r}; leave it unset"
            for name, job in jobs(bundle).items() for field in PAUSABLE_JOB_FIELDS
            if isinstance(job.get(field), dict) and "pause_status" in job[field]]


def variable_problems(bundle: dict) -> list[str]:
    declared = set(bundle.get("variables") or {})
    used = {name for text in strings(bundle) for name in VAR_REF.findall(text)}
    problems = [f"${{var.{name}}} is used but not declared under `variables`" for name in sorted(used - declared)]
    problems += [f"target {target_name!r} sets undeclared variable {name!r}"
                 for target_name, target in (bundle.get("targets") or {}).items()
                 for name in (target.get("variables") or {}) if name not in declared]
    return problems


def job_parameter_problems(bundle: dict) -> list[str]:
    problems = []
    for name, job in jobs(bundle).items():
        declared = {parameter["name"] for parameter in job.get("parameters", [])}
        used = {ref for text in strings(job) for ref in JOB_PARAMETER_REF.findall(text)}
        problems += [f"job {name!r}: {{{{job.parameters.{ref}}}}} names no job parameter"
                     for ref in sorted(used - declared)]
    return problems


def dependency_problems(bundle: dict) -> list[str]:
    problems = []
    for name, job in jobs(bundle).items():
        tasks = job.get("tasks", [])
        keys = {task["task_key"] for task in tasks}
        problems += [f"job {name!r}: task {task['task_key']!r} depends on unknown task {dep['task_key']!r}"
                     for task in tasks for dep in task.get("depends_on", []) if dep["task_key"] not in keys]
    return problems


def notebook_problems(yaml_file: Path) -> list[str]:
    """Each notebook a file's tasks run exists and is a source notebook (the CLI's own checks)."""
    problems = []
    for task, path in notebook_files(yaml_file):
        where = f"{rel(yaml_file)}: notebook_path {task['notebook_path']!r}"
        if not path.is_file():
            problems.append(f"{where}: {rel(path)} does not exist")
        elif path.read_text(encoding="utf-8").splitlines()[:1] != [NOTEBOOK_HEADER]:
            problems.append(f"{where}: first line of {rel(path)} is not {NOTEBOOK_HEADER!r}")
    return problems


def widget_problems(yaml_file: Path) -> list[str]:
    """Each widget a task passes is declared by its notebook (if it exists): `widgets(...)` names it, or the
    source names it as a quoted string."""
    problems = []
    for task, path in notebook_files(yaml_file):
        if not path.is_file():
            continue  # notebook_problems reports it
        source = path.read_text(encoding="utf-8")
        declared = declared_widgets(source)
        problems += [f"{rel(yaml_file)}: widget {widget!r} is passed but never named in {rel(path)}"
                     for widget in task.get("base_parameters") or {}
                     if widget not in declared and f'"{widget}"' not in source and f"'{widget}'" not in source]
    return problems


def notebook_files(yaml_file: Path) -> Iterator[tuple[dict, Path]]:
    for task in notebook_tasks(load_yaml(yaml_file)):
        yield task, notebook_file(yaml_file, task["notebook_path"])


# ---------------------------------------------------------------- fixtures

YAML_FILES = [BUNDLE_FILE, *sorted((REPO_ROOT / "resources").glob("*.yml"))]
TARGETS = list((load_yaml(BUNDLE_FILE).get("targets") or {}) if BUNDLE_FILE.is_file() else [])


@pytest.fixture(scope="module")
def validator():
    schema = with_python_patterns(json.loads(gzip.decompress(SCHEMA_FILE.read_bytes()).decode("utf-8")))
    cls = validator_for(schema, default=Draft202012Validator)
    cls.check_schema(schema)  # also compiles every rewritten pattern
    return cls(schema)


@pytest.fixture(scope="module")
def bundle() -> dict:
    return merged_bundle()


# ---------------------------------------------------------------- pattern rewriting

def test_python_pattern_rewrites_letters_and_digits_outside_classes():
    pattern = re.compile(python_pattern(r"^\p{L}+\p{N}$"))
    assert pattern.match("été7") and pattern.match("abc٣")
    assert not pattern.match("ab_7") and not pattern.match("7a")


def test_python_pattern_rewrites_classes():
    pattern = re.compile(python_pattern(r"^[\p{L}\p{N}]+$"))
    assert pattern.match("é9x") and not pattern.match("a-b") and not pattern.match("a_b")
    with_literal = re.compile(python_pattern(r"^[-\]\p{L}]+$"))
    assert with_literal.match("a-]b") and not with_literal.match("a1")
    assert python_pattern(r"[a-z]\d\[\p") == r"[a-z]\d\[\p"


def test_schema_variable_reference_pattern_works_in_python():
    schema_pattern = r"\$\{(var(\.\p{L}+([-_]*[\p{L}\p{N}]+)*(\[[0-9]+\])*)+)\}"
    pattern = re.compile(python_pattern(schema_pattern))
    assert pattern.search("${var.catalog}") and pattern.search("${var.my-var_2}")
    assert not pattern.search("${var.}") and not pattern.search("${var._x}")


# ---------------------------------------------------------------- schema validation

@pytest.mark.parametrize("path", YAML_FILES, ids=rel)
def test_each_file_validates_alone(validator, path):
    assert path.is_file(), f"{rel(path)} is missing"
    errors = schema_errors(validator, load_yaml(path))
    assert not errors, f"{rel(path)}:\n" + "\n".join(errors)


@pytest.mark.parametrize("path", YAML_FILES, ids=rel)
def test_each_file_uses_only_known_top_level_keys(validator, path):
    # The schema allows any top-level key; the CLI does not.
    unknown = set(load_yaml(path)) - set(validator.schema["properties"])
    assert not unknown, f"{rel(path)}: unknown top-level keys {sorted(unknown)}"


def test_include_globs_match_every_resource_file():
    root = load_yaml(BUNDLE_FILE)
    empty = [pattern for pattern in root.get("include", []) if not list(REPO_ROOT.glob(pattern))]
    assert not empty, f"include globs matching no file: {empty}"
    assert set(YAML_FILES[1:]) <= set(included_files(root)), "some resources/*.yml are not included"


def test_merged_bundle_validates(validator, bundle):
    assert jobs(bundle), "the merged bundle defines no job"
    errors = schema_errors(validator, bundle)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_validates(validator, bundle, target):
    errors = schema_errors(validator, target_bundle(bundle, target))
    assert not errors, f"target {target!r}:\n" + "\n".join(errors)


# ---------------------------------------------------------------- what the schema does not check

def test_targets_have_valid_modes_one_default_and_prod_root_path(bundle):
    assert target_problems(bundle) == []
    assert {"dev", "prod"} <= set(bundle["targets"])
    assert bundle["targets"]["dev"] == bundle["targets"]["dev"] | {"mode": "development", "default": True}
    assert bundle["targets"]["prod"]["mode"] == "production"


def test_schedules_leave_pause_status_unset(bundle):
    assert any(job.get("schedule") for job in jobs(bundle).values()), "no scheduled job"
    assert schedule_problems(bundle) == []
    for target in TARGETS:
        assert schedule_problems(target_bundle(bundle, target)) == [], target


def test_nightly_and_weekly_jobs_are_scheduled_and_the_fold_ensemble_is_on_demand(bundle):
    scheduled = {name for name, job in jobs(bundle).items() if job.get("schedule")}
    assert scheduled == {"nightly", "weekly_tuning"}
    assert {"nightly", "weekly_tuning", "fold_ensemble"} <= set(jobs(bundle))
    assert "SUN" in jobs(bundle)["weekly_tuning"]["schedule"]["quartz_cron_expression"]


def test_variable_references_are_declared(bundle):
    assert variable_problems(bundle) == []
    assert {"catalog", "schema", "volume", "experiment_path", "model_name", "node_type_id",
            "spark_version"} <= set(bundle["variables"])


def test_resource_references_name_declared_resources(bundle):
    assert any(RESOURCE_REF.search(text) for text in strings(jobs(bundle))), "jobs refer to no resource"
    assert resource_problems(bundle) == []


def test_job_parameter_references_are_declared(bundle):
    assert job_parameter_problems(bundle) == []
    for target in TARGETS:
        assert job_parameter_problems(target_bundle(bundle, target)) == [], target


def test_task_dependencies_name_existing_tasks(bundle):
    for target in TARGETS:
        assert dependency_problems(target_bundle(bundle, target)) == [], target


@pytest.mark.parametrize("target", TARGETS)
def test_every_job_parameter_reaches_a_task_under_its_own_name(bundle, target):
    """Entry-point options carry the job parameter's name (`--x={{job.parameters.x}}`); every job parameter is read
    by a task: a widget of one of the job's notebooks (pushed down), an option of a wheel task, or the operand of a
    condition task (those are listed in jobs/params.py JOB_ONLY_PARAMS)."""
    deployed = target_bundle(bundle, target)
    assert same_name_problems(deployed) == []
    for name, job in jobs(deployed).items():
        declared = {parameter["name"] for parameter in job.get("parameters", [])}
        read = {ref for text in strings(job.get("tasks", [])) for ref in JOB_PARAMETER_REF.findall(text)}
        read |= {widget for task in job.get("tasks", []) if "notebook_task" in task
                 for widget in NOTEBOOK_WIDGETS[Path(task["notebook_task"]["notebook_path"]).name]}
        assert declared <= read, f"{target}/{name}: job parameters no task reads: {sorted(declared - read)}"
        condition_operands = {ref for task in job.get("tasks", []) if "condition_task" in task
                              for ref in JOB_PARAMETER_REF.findall(str(task["condition_task"]))}
        assert condition_operands == set(JOB_ONLY_PARAMS.get(name, {})), f"{target}/{name}"


def test_notebook_tasks_run_known_notebooks(bundle):
    paths = [path for path in YAML_FILES for _, path in notebook_files(path)]
    assert paths, "no notebook task found"
    unknown = sorted({rel(path) for path in paths if path.parent != NOTEBOOK_DIR or path.name not in NOTEBOOK_WIDGETS})
    assert not unknown, f"notebook tasks run unknown notebooks (typo?): {unknown}"
    assert {path.name for path in paths} == set(NOTEBOOK_WIDGETS), "some notebooks are run by no job"


@pytest.mark.parametrize("notebook", sorted(NOTEBOOK_WIDGETS))
def test_notebook_declares_exactly_the_widgets_jobs_pass(notebook):
    path = NOTEBOOK_DIR / notebook
    if not path.is_file():
        pytest.skip(f"{rel(path)} does not exist yet (being written for its own issue); the jobs already "
                    f"pass it {sorted(NOTEBOOK_WIDGETS[notebook])}")
    source = path.read_text(encoding="utf-8")
    assert source.splitlines()[:1] == [NOTEBOOK_HEADER], f"first line of {rel(path)} is not {NOTEBOOK_HEADER!r}"
    assert declared_widgets(source) == NOTEBOOK_WIDGETS[notebook]


@pytest.mark.parametrize("target", TARGETS)
def test_notebook_tasks_get_every_widget_from_a_job_parameter(bundle, target):
    """Notebook tasks pass no base_parameters (one definition: the job parameters are pushed down), and the job
    declares every widget its notebooks have, so no widget silently keeps a local default in a job run."""
    for name, job in jobs(target_bundle(bundle, target)).items():
        declared = {parameter["name"] for parameter in job.get("parameters", [])}
        for task in notebook_tasks(job.get("tasks", [])):
            assert "base_parameters" not in task, f"{target}/{name}: {task['notebook_path']} passes base_parameters"
            widgets = NOTEBOOK_WIDGETS[Path(task["notebook_path"]).name]
            assert widgets <= declared, f"{target}/{name}: {task['notebook_path']} widgets without a job " \
                                        f"parameter: {sorted(widgets - declared)}"


@pytest.mark.parametrize("target", TARGETS)
def test_nightly_runs_prepare_only_when_asked_then_train_register_score(bundle, target):
    tasks = {task["task_key"]: task for task in jobs(target_bundle(bundle, target))["nightly"]["tasks"]}
    assert list(tasks) == ["generate_data", "prepare_data", "train", "register", "score"]
    condition = tasks["generate_data"]["condition_task"]
    assert condition == {"op": "EQUAL_TO", "left": "{{job.parameters.generate_data}}", "right": "true"}
    assert tasks["prepare_data"]["depends_on"] == [{"task_key": "generate_data", "outcome": "true"}]
    # train runs after prepare_data, or without it when the condition excluded it; never after a failed one
    assert tasks["train"]["depends_on"] == [{"task_key": "generate_data"}, {"task_key": "prepare_data"}]
    assert tasks["train"]["run_if"] == "NONE_FAILED"
    for before, after in [("train", "register"), ("register", "score")]:
        assert tasks[after]["depends_on"] == [{"task_key": before}]
        assert tasks[after].get("run_if", "ALL_SUCCESS") == "ALL_SUCCESS"
    register = tasks["register"]["python_wheel_task"]["parameters"]
    assert register[:2] == ["workspace", "promote"]


@pytest.mark.parametrize("target", TARGETS)
def test_compute_follows_the_target(bundle, target):
    """dev and prod: serverless, every task in the job environment holding the built wheel (for notebook tasks it
    replaces the notebook's own environment); dev_classic: a job cluster on an ML runtime with the wheel as a
    library. The tasks themselves are the same in every target."""
    deployed = target_bundle(bundle, target)
    assert compute_problems(deployed, serverless=target in SERVERLESS_TARGETS) == []
    for name, job in jobs(deployed).items():
        for task in job["tasks"]:
            kinds = [kind for kind in TASK_KINDS if kind in task]
            assert len(kinds) == 1, f"{target}/{name}.{task['task_key']}: task kinds {kinds}"
    if target in CLASSIC_TARGETS:
        spark_version = resolved_target(bundle, target)["variables"]["spark_version"]["default"]
        assert "-ml-" in spark_version, f"{target}: {spark_version} is not an ML runtime"


def test_every_target_runs_the_same_tasks(bundle):
    """One definition of each job: the targets differ in compute only (what a task runs and with what)."""
    compute = ("environment_key", "job_cluster_key", "libraries")
    runs = {target: {name: [{k: v for k, v in task.items() if k not in compute} for task in job["tasks"]]
                     for name, job in jobs(target_bundle(bundle, target)).items()} for target in TARGETS}
    assert all(runs[target] == runs["dev"] for target in TARGETS), "targets change what the tasks run"


def test_prod_runs_as_a_service_principal_with_permissions(bundle):
    prod = target_bundle(bundle, "prod")
    assert set(prod["run_as"]) == {"service_principal_name"}
    levels = {entry["level"] for entry in prod["permissions"]}
    assert {"CAN_MANAGE", "CAN_VIEW"} <= levels
    assert "run_as" not in target_bundle(bundle, "dev"), "dev runs as the deploying user"
    models = prod["resources"]["registered_models"]
    assert all(model.get("grants") and model["lifecycle"]["prevent_destroy"] for model in models.values())
    for kind, key in (("schemas", "manymodels"), ("volumes", "data")):
        assert prod["resources"][kind][key]["lifecycle"]["prevent_destroy"] is True, kind
        assert not (target_bundle(bundle, "dev")["resources"][kind][key].get("lifecycle") or {}).get(
            "prevent_destroy"), f"dev's per-user {kind} go with `bundle destroy`"


def test_models_and_experiment_are_bundle_resources_the_jobs_use(bundle):
    resources = bundle["resources"]
    assert {"router", "tuned", "fold_ensemble"} <= set(resources["registered_models"])
    assert resources["experiments"]["training"]["name"] == "${var.experiment_path}"
    for model in resources["registered_models"].values():
        assert model["schema_name"] == "${resources.schemas.manymodels.name}"  # created after the schema
    for name, job in jobs(bundle).items():
        defaults = {parameter["name"]: parameter["default"] for parameter in job["parameters"]}
        assert defaults["model_name"].startswith("${resources.registered_models."), name
        assert defaults["schema"] == "${resources.schemas.manymodels.name}", name
        assert defaults["volume"] == "${resources.volumes.data.name}", name
        assert defaults["experiment"] == "${resources.experiments.training.name}", name


@pytest.mark.parametrize("target", TARGETS)
def test_jobs_carry_the_tag_the_workspace_helper_finds_them_by(bundle, target):
    from manymodels.databricks.workspace import JOB_TAG, TARGET_TAG

    for name, job in jobs(resolved_target(bundle, target)).items():
        assert job["tags"][JOB_TAG] == name
        assert job["tags"][TARGET_TAG] == target


# ---------------------------------------------------------------- the typed job classes and the entry point

@pytest.mark.parametrize("target", TARGETS)
def test_every_job_loads_into_the_typed_job_class(bundle, target):
    """Each job of the resolved target through `databricks.bundles.jobs.Job.from_dict` (PyPI databricks-bundles),
    which rejects unknown fields, wrong types and bad enum values; the round trip loses nothing."""
    from databricks.bundles.jobs import Job

    deployed = resolved_target(bundle, target)
    for name, job in jobs(deployed).items():
        leftover = [text for text in strings(job) if "${" in text]
        assert not leftover, f"{target}/{name}: unresolved references {leftover}"
        typed = Job.from_dict(job)
        assert typed.as_dict() == job, f"{target}/{name}: fields lost in the typed round trip"
        assert typed.name == job["name"] and len(typed.tasks) == len(job["tasks"])


def test_typed_job_class_rejects_what_the_schema_would(bundle):
    from databricks.bundles.jobs import Job

    job = jobs(resolved_target(bundle, "prod"))["nightly"]
    for broken in (
        {**job, "max_concurrent_runs": "many"},
        {**job, "tasks": [{**job["tasks"][0], "notebok_task": {}}]},
        {**job, "permissions": [{"level": "CAN_FLY", "group_name": "users"}]},
    ):
        with pytest.raises((ValueError, TypeError)):
            Job.from_dict(broken)


@pytest.mark.parametrize("target", TARGETS)
def test_wheel_tasks_parse_with_the_manymodels_entry_point(bundle, target):
    """Every python_wheel_task runs `manymodels`; its argument list, with the job parameters' defaults filled
    in, parses with the CLI's own parser, and its options are the command's declared parameters."""
    import manymodels.jobs.cli as cli

    parser = cli._parser()
    commands = subcommands(parser)
    deployed = resolved_target(bundle, target)
    missing = []
    for name, job in jobs(deployed).items():
        defaults = {parameter["name"]: parameter["default"] for parameter in job["parameters"]}
        for task in job["tasks"]:
            wheel = task.get("python_wheel_task")
            if not wheel:
                continue
            assert (wheel["package_name"], wheel["entry_point"]) == ("manymodels", "manymodels")
            assert wheel["entry_point"] in entry_points(), "pyproject.toml declares no `manymodels` script"
            argv = [JOB_PARAMETER_REF.sub(lambda m: defaults[m[1]], arg) for arg in wheel["parameters"]]
            if argv[0] not in commands:
                missing.append(f"{name}.{task['task_key']}: `manymodels {argv[0]}`")
                continue
            try:
                parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"{target}/{name}.{task['task_key']}: `manymodels {' '.join(argv)}` does not parse")
            command = " ".join(argv[:2]) if argv[0] == "workspace" else argv[0]
            known = {p.name for p in job_params(command)}
            assert option_names(wheel["parameters"]) <= known, f"{name}.{task['task_key']}"
    if missing:
        pytest.skip("subcommands not in the CLI yet (their issues are in progress): " + "; ".join(missing))


# ---------------------------------------------------------------- helpers of the tests above

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
SERVERLESS_TARGETS = {"dev", "prod"}
CLASSIC_TARGETS = {"dev_classic"}
TASK_KINDS = ("notebook_task", "python_wheel_task", "spark_python_task", "run_job_task", "condition_task")
JOB_PERMISSION_LEVELS = {"CAN_VIEW": "CAN_VIEW", "CAN_MANAGE": "CAN_MANAGE", "CAN_RUN": "CAN_MANAGE_RUN"}
RESOURCE_REF = re.compile(r"\$\{resources\.([\w-]+)\.([\w-]+)\.([\w-]+)\}")
REFERENCE = re.compile(r"\$\{([\w.-]+)\}")
# Stand-ins for what the CLI knows at deploy time.
CURRENT_USER = {"workspace.current_user.userName": "someone@example.com",
                "workspace.current_user.short_name": "someone"}


def resolved_target(bundle: dict, name: str) -> dict:
    """The target with every ${...} reference substituted as the CLI would: variables (complex ones keep
    their structure), bundle name and target, the current user, and ${resources.<type>.<key>.<field>};
    then the target's run_as and permissions applied to each job, as the CLI does."""
    deployed = target_bundle(bundle, name)
    values = {f"var.{var}": spec.get("default") for var, spec in deployed["variables"].items()}
    values |= {"bundle.target": name, "bundle.name": deployed["bundle"]["name"], **CURRENT_USER}
    for kind, items in (deployed.get("resources") or {}).items():
        for key, resource in items.items():
            values |= {f"resources.{kind}.{key}.{field}": value for field, value in resource.items()
                       if isinstance(value, str)}

    def sub(node, depth=0):
        assert depth < 20, f"reference cycle near {node!r}"
        if isinstance(node, dict):
            return {k: sub(v, depth) for k, v in node.items()}
        if isinstance(node, list):
            return [sub(v, depth) for v in node]
        if not isinstance(node, str):
            return node
        whole = REFERENCE.fullmatch(node)
        if whole and whole[1] in values:
            return sub(values[whole[1]], depth + 1)
        return REFERENCE.sub(lambda m: str(sub(values[m[1]], depth + 1)) if m[1] in values else m[0], node)

    resolved = sub(deployed)
    for job in jobs(resolved).values():
        if "run_as" in resolved:
            job.setdefault("run_as", resolved["run_as"])
        job["permissions"] = job.get("permissions", []) + [
            {**entry, "level": JOB_PERMISSION_LEVELS[entry["level"]]} for entry in resolved.get("permissions", [])]
        if not job["permissions"]:
            del job["permissions"]
    return resolved


def resource_problems(bundle: dict) -> list[str]:
    resources = bundle.get("resources") or {}
    return [f"${{resources.{kind}.{key}.{field}}}: no such resource field"
            for text in strings(bundle) for kind, key, field in RESOURCE_REF.findall(text)
            if field not in ((resources.get(kind) or {}).get(key) or {})]


def same_name_problems(bundle: dict) -> list[str]:
    """A widget or option fed from a job parameter must carry that parameter's name."""
    problems = []
    for name, job in jobs(bundle).items():
        for task in job.get("tasks", []):
            where = f"{name}.{task['task_key']}"
            for widget, value in ((task.get("notebook_task") or {}).get("base_parameters") or {}).items():
                if JOB_PARAMETER_REF.findall(value) != [widget]:
                    problems.append(f"{where}: widget {widget!r} gets {value!r}")
            for arg in (task.get("python_wheel_task") or {}).get("parameters") or []:
                option = re.fullmatch(r"--([\w-]+)=(.*)", arg)
                refs = JOB_PARAMETER_REF.findall(option[2]) if option else []
                # an option takes its own parameter (a model name may be composed: catalog.schema.model_name)
                if option and refs and (option[1] not in refs or not set(refs) <= {option[1], "catalog", "schema"}):
                    problems.append(f"{where}: option --{option[1]} gets {option[2]!r}")
                elif not option and JOB_PARAMETER_REF.search(arg):
                    problems.append(f"{where}: {arg!r} is not in the --name=value form")
    return problems


def compute_problems(bundle: dict, *, serverless: bool) -> list[str]:
    """Each task on the compute its target asks for, with the bundle's wheel on it."""
    wheel = "../dist/*.whl"
    problems = []
    for name, job in jobs(bundle).items():
        environments = {env["environment_key"]: env.get("spec") or {} for env in job.get("environments", [])}
        clusters = {cluster["job_cluster_key"] for cluster in job.get("job_clusters", [])}
        for task in job.get("tasks", []):
            where = f"{name}.{task['task_key']}"
            if "condition_task" in task:  # evaluated by the jobs service: no compute
                if {"environment_key", "job_cluster_key", "libraries"} & set(task):
                    problems.append(f"{where}: a condition task has no compute")
                continue
            if serverless:
                spec = environments.get(task.get("environment_key"))
                if spec is None or wheel not in spec.get("dependencies", []):
                    problems.append(f"{where}: no serverless environment holding {wheel}")
                if "job_cluster_key" in task or "libraries" in task:
                    problems.append(f"{where}: serverless tasks take the job environment, not a cluster or libraries")
            else:
                if task.get("job_cluster_key") not in clusters:
                    problems.append(f"{where}: no job cluster")
                if {"whl": wheel} not in task.get("libraries", []):
                    problems.append(f"{where}: the wheel is not a library")
                if "environment_key" in task:
                    problems.append(f"{where}: environment_key on a classic target")
    return problems


def declared_widgets(source: str) -> set[str]:
    """The widgets a notebook's source declares: `widgets(job_params("<command>"))`, or the keys of a dict literal
    passed to `widgets({...})`."""
    import ast

    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "widgets" and node.args):
            continue
        arg = node.args[0]
        if isinstance(arg, ast.Dict):
            return {key.value for key in arg.keys if isinstance(key, ast.Constant)}
        if isinstance(arg, ast.Call) and getattr(arg.func, "id", None) == "job_params":
            return {p.name for p in job_params(arg.args[0].value)}
    return set()


def subcommands(parser) -> dict:
    import argparse

    return next(action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction))


def option_names(arguments: list[str]) -> set[str]:
    return {match[1] for arg in arguments if (match := re.fullmatch(r"--([\w-]+)=.*", arg))}


def entry_points() -> set[str]:
    import tomllib

    return set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"])


# ---------------------------------------------------------------- the checks can fail

@pytest.mark.parametrize("instance", [
    {"resources": {"jobs": {"j": {"tasks": [{"task_key": "a", "notebook_tsk": {"notebook_path": "x"}}]}}}},
    {"resources": {"jobs": {"j": {"max_concurrent_runs": "many"}}}},
    {"resources": {"jobs": {"j": {"tasks": [{"notebook_task": {"notebook_path": "x"}}]}}}},
    {"targets": {"dev": {"default": "yes"}}},
    {"variables": {"catalog": {"default": "main", "descripton": "typo"}}},
], ids=["unknown-field", "wrong-type", "missing-task-key", "bool-as-string", "variable-typo"])
def test_schema_rejects_invalid_bundles(validator, instance):
    assert schema_errors(validator, instance)


def _broken_bundle() -> dict:
    return {
        "variables": {"catalog": {"default": "main"}},
        "targets": {"dev": {"mode": "dev", "default": True, "variables": {"schema": "x"}},
                    "prod": {"mode": "production", "default": True}},
        "resources": {"jobs": {"j": {
            "schedule": {"quartz_cron_expression": "0 0 3 * * ?", "timezone_id": "UTC", "pause_status": "PAUSED"},
            "parameters": [{"name": "a", "default": "${var.catalogue}"}],
            "tasks": [{"task_key": "t", "depends_on": [{"task_key": "missing"}],
                       "notebook_task": {"notebook_path": "n", "base_parameters": {"b": "{{job.parameters.b}}"}}}],
        }}},
    }


@pytest.mark.parametrize("check, expected_count", [
    (target_problems, 3),  # mode "dev", two defaults, prod without root_path
    (schedule_problems, 1),
    (variable_problems, 2),  # ${var.catalogue}, target variable "schema"
    (job_parameter_problems, 1),
    (dependency_problems, 1),
])
def test_checks_catch_a_broken_bundle(check, expected_count):
    assert len(check(_broken_bundle())) == expected_count


def test_schema_alone_accepts_mode_dev(validator):
    # Why target_problems exists: the schema takes any mode string.
    broken = {"targets": {"dev": {"mode": "dev", "default": True}}}
    assert not schema_errors(validator, broken)
    assert target_problems(broken)


def test_notebook_check_catches_missing_and_plain_python_files(tmp_path):
    (tmp_path / "plain.py").write_text("print('not a notebook')\n", encoding="utf-8")
    (tmp_path / "widgets.py").write_text(f'{NOTEBOOK_HEADER}\ndbutils.widgets.text("a", "")\n', encoding="utf-8")
    job_file = tmp_path / "job.yml"
    job_file.write_text(yaml.safe_dump({"resources": {"jobs": {"j": {"tasks": [
        {"task_key": "a", "notebook_task": {"notebook_path": "plain"}},
        {"task_key": "b", "notebook_task": {"notebook_path": "missing.py"}},
        {"task_key": "c", "notebook_task": {"notebook_path": "widgets", "base_parameters": {"a": "1", "b": "2"}}},
    ]}}}}), encoding="utf-8")
    problems = notebook_problems(job_file) + widget_problems(job_file)
    assert len(problems) == 3, problems
    assert "first line" in problems[0] and "does not exist" in problems[1] and "'b'" in problems[2]


def test_cli_underscore_options_equal_the_dash_options():
    """Job parameters reach `manymodels train/main/prepare` under the widget names; the dash names and the older
    short ones stay."""
    from manymodels.jobs.cli import _parser

    parse = lambda *argv: vars(_parser().parse_args(list(argv)))  # noqa: E731
    dashed = parse("train", "--input", "p", "--group-cols", "a,b", "--feature-cols", "x", "--label-col", "y",
                   "--model-name", "m", "--table", "t", "--params", '{"alpha": 1}', "--failure-policy", "raise")
    widgets = parse("train", "--input_path=p", "--group_cols=a,b", "--feature_cols=x", "--label_col=y",
                    "--model_name=m", "--model_table=t", '--estimator_params={"alpha": 1}', "--failure_policy=raise")
    assert dashed == widgets and widgets["group_cols"] == ["a", "b"] and widgets["model_table"] == "t"
    assert parse("main", "--n_groups", "5", "--mean_rows", "7") == parse("main", "--groups", "5", "--rows", "7")
    assert parse("prepare", "--output_dir=o", "--n_groups=5", "--size_distribution=zipf") == \
        parse("prepare", "--out", "o", "--groups", "5", "--sizes", "zipf")


def test_job_parameter_defaults_are_values_the_code_accepts():
    """Defaults are checked against the code's own vocabularies, not only their names."""
    from manymodels.core.folds import COMBINES, SAMPLINGS

    params = {p["name"]: p.get("default") for p in load_yaml(
        REPO_ROOT / "resources" / "fold_ensemble.job.yml")["resources"]["jobs"]["fold_ensemble"]["parameters"]}
    assert params["sampling"] in SAMPLINGS and params["combine"] in COMBINES
    from manymodels.core.retrain import RETRAIN_MODES

    nightly = {p["name"]: p.get("default") for p in
               load_yaml(REPO_ROOT / "resources" / "nightly.job.yml")["resources"]["jobs"]["nightly"]["parameters"]}
    assert nightly["retrain"] in RETRAIN_MODES and nightly["failure_policy"] in ("record", "raise")


# ---------------------------------------------------------------- what a deploy uploads

def test_the_bundle_has_an_identity_and_uploads_no_tests_or_benches(bundle):
    """bundle.uuid as the bundle templates set it; `sync.exclude` keeps tests, benches and doc images out of the
    workspace (the wheel is built locally); the CLI's local state (.databricks/) is never committed."""
    uuid.UUID(bundle["bundle"]["uuid"])
    excluded = bundle["sync"]["exclude"]
    assert {"tests/", "bench/"} <= set(excluded)
    assert not any(p.startswith(("notebooks", "resources", "src")) for p in excluded)
    assert ".databricks/" in (REPO_ROOT / ".gitignore").read_text().splitlines()
