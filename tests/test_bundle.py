"""Offline checks of the Databricks Asset Bundle: databricks.yml and resources/*.yml.

The CLI's JSON schema (in ../shared/schemas, next to the repository) checks the shape of each
file, of the merged bundle and of every target. The ``*_problems`` functions check what the CLI
enforces beyond that schema; each returns a list of messages, empty when all is well, and a
negative test proves each can fail. No Spark, no network.
"""
from __future__ import annotations

import copy
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.validators import Draft202012Validator, validator_for

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLE_FILE = REPO_ROOT / "databricks.yml"
SCHEMA_FILE = REPO_ROOT.parent / "shared" / "schemas" / "databricks-bundle.schema.json"

NOTEBOOK_HEADER = "# Databricks notebook source"
MODES = ("development", "production")
# Target keys that are not overrides of the root configuration.
TARGET_ONLY_KEYS = ("default", "mode")
# Target keys the CLI moves under `bundle`.
TARGET_BUNDLE_KEYS = ("cluster_id", "compute_id", "git")
# Job lists whose entries the CLI merges by key after applying target overrides.
KEYED_JOB_LISTS = {"tasks": "task_key", "job_clusters": "job_cluster_key", "parameters": "name"}
PAUSABLE_JOB_FIELDS = ("schedule", "trigger", "continuous")

# The notebooks' widgets: the job must pass exactly these.
NOTEBOOK_WIDGETS = {
    "01_prepare_data.py": {"n_groups", "mean_rows", "size_distribution", "layout", "output_dir", "seed"},
    "02_train_per_group.py": {
        "input_path", "group_cols", "feature_cols", "label_col", "estimator", "estimator_params",
        "model_name", "alias", "experiment", "model_table", "failure_policy",
    },
}

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
    """Each widget a task passes is named, as a quoted string, in its notebook (if it exists)."""
    problems = []
    for task, path in notebook_files(yaml_file):
        if not path.is_file():
            continue  # notebook_problems reports it
        source = path.read_text(encoding="utf-8")
        problems += [f"{rel(yaml_file)}: widget {widget!r} is passed but never named in {rel(path)}"
                     for widget in task.get("base_parameters") or {}
                     if f'"{widget}"' not in source and f"'{widget}'" not in source]
    return problems


def notebook_files(yaml_file: Path) -> Iterator[tuple[dict, Path]]:
    for task in notebook_tasks(load_yaml(yaml_file)):
        yield task, notebook_file(yaml_file, task["notebook_path"])


# ---------------------------------------------------------------- fixtures

YAML_FILES = [BUNDLE_FILE, *sorted((REPO_ROOT / "resources").glob("*.yml"))]
TARGETS = list((load_yaml(BUNDLE_FILE).get("targets") or {}) if BUNDLE_FILE.is_file() else [])


@pytest.fixture(scope="module")
def validator():
    if not SCHEMA_FILE.is_file():
        pytest.fail(f"Bundle JSON schema not found at {SCHEMA_FILE}. These tests need the shared checkout "
                    f"next to the repository: <repo>/../shared/schemas/databricks-bundle.schema.json.",
                    pytrace=False)
    schema = with_python_patterns(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
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


def test_schedules_leave_pause_status_unset(bundle):
    assert any(job.get("schedule") for job in jobs(bundle).values()), "no scheduled job"
    assert schedule_problems(bundle) == []


def test_variable_references_are_declared(bundle):
    assert variable_problems(bundle) == []


def test_job_parameter_references_are_declared(bundle):
    assert job_parameter_problems(bundle) == []


def test_task_dependencies_name_existing_tasks(bundle):
    assert dependency_problems(bundle) == []


def test_notebooks_exist_as_source_notebooks():
    assert any(notebook_tasks(load_yaml(path)) for path in YAML_FILES), "no notebook task found"
    problems = [problem for path in YAML_FILES for problem in notebook_problems(path)]
    assert not problems, "\n".join(problems)


def test_notebooks_name_the_widgets_they_are_passed():
    problems = [problem for path in YAML_FILES for problem in widget_problems(path)]
    assert not problems, "\n".join(problems)


def test_tasks_pass_exactly_the_notebook_widgets(bundle):
    passed = {Path(task["notebook_path"]).name: set(task.get("base_parameters") or {})
              for task in notebook_tasks(jobs(bundle))}
    assert {name: passed.get(name) for name in NOTEBOOK_WIDGETS} == NOTEBOOK_WIDGETS


def test_train_job_prepares_data_then_trains(bundle):
    tasks = {task["task_key"]: task for task in jobs(bundle)["train_per_group"]["tasks"]}
    assert set(tasks) == {"prepare_data", "train_per_group"}
    assert tasks["train_per_group"]["depends_on"] == [{"task_key": "prepare_data"}]
    assert "depends_on" not in tasks["prepare_data"]


def test_tasks_run_on_a_job_cluster_with_the_built_wheel(bundle):
    wheel_dirs = {(REPO_ROOT / artifact.get("path", ".") / "dist").resolve()
                  for artifact in bundle["artifacts"].values() if artifact.get("type") == "whl"}
    for path in YAML_FILES[1:]:
        for name, job in jobs(load_yaml(path)).items():
            clusters = {cluster["job_cluster_key"] for cluster in job.get("job_clusters", [])}
            for task in job.get("tasks", []):
                assert task.get("job_cluster_key") in clusters, f"{name}.{task['task_key']}: no job cluster"
                wheels = [(path.parent / lib["whl"]).parent.resolve() for lib in task.get("libraries", [])
                          if "whl" in lib]
                assert wheels and set(wheels) <= wheel_dirs, f"{name}.{task['task_key']}: wheel {wheels}"


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
