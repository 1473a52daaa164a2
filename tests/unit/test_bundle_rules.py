"""Rules of the Databricks and MLflow documentation that the bundle, the notebooks and the job defaults must follow,
each checked offline with its source cited, and each check shown able to fail (test_bundle.py has the shared
loaders: the merged bundle, each target with its overrides, and each target with its references resolved)."""
from __future__ import annotations

import re

import pytest
from test_bundle import JOB_PARAMETER_REF, REPO_ROOT, TARGETS, jobs, merged_bundle, resolved_target, target_bundle

from manymodels import locations
from manymodels.errors import InputError
from manymodels.locations import Locations
from manymodels.tracking.context import experiment_name

BUNDLE = merged_bundle()
PROD_LIKE = ("prod",)
# What a job parameter default may be when an executor reads it: a Unity Catalog table name or a volume folder.
# Executors of serverless and multi-node compute cannot read the driver's disk, its working directory, or /dbfs/tmp
# (https://docs.databricks.com/en/files/index.html, "Work with files on Databricks": volumes are the place for
# non-tabular data on Unity Catalog compute; the DBFS root is not recommended and absent on serverless).
EXECUTOR_PATH_PARAMS = ("input_path", "model_table", "output_table", "staging_dir", "output_dir", "params_from")


def job_defaults(resolved: dict, name: str) -> dict[str, str]:
    return {p["name"]: str(p["default"]) for p in jobs(resolved)[name].get("parameters", [])}


# ---------------------------------------------------------------- three-level Unity Catalog names

def uc_name_problems(resolved: dict) -> list[str]:
    """Unity Catalog names a registered model catalog.schema.model
    (https://docs.databricks.com/en/machine-learning/manage-model-lifecycle/index.html): the model name the notebooks
    build from each job's catalog, schema and model_name, and each table parameter, must have three levels."""
    problems = []
    for name in jobs(resolved):
        d = job_defaults(resolved, name)
        composed = Locations(d.get("catalog", ""), d.get("schema", "")).model_name(d["model_name"])
        if len(composed.split(".")) != 3 or not all(composed.split(".")):
            problems.append(f"{name}: model name {composed!r} is not catalog.schema.model")
        problems += [f"{name}: {key}={d[key]!r} is not catalog.schema.table"
                     for key in ("model_table", "output_table") if key in d and d[key].count(".") != 2]
    for key, model in (resolved["resources"].get("registered_models") or {}).items():
        if not (model.get("catalog_name") and model.get("schema_name")):
            problems.append(f"registered model {key}: no catalog_name/schema_name")
    return problems


@pytest.mark.parametrize("target", TARGETS)
def test_model_and_table_names_have_three_levels(target):
    assert uc_name_problems(resolved_target(BUNDLE, target)) == []


def test_the_name_check_can_fail():
    resolved = resolved_target(BUNDLE, "dev")
    for job in jobs(resolved).values():
        for p in job["parameters"]:
            if p["name"] in ("catalog", "model_table"):
                p["default"] = "" if p["name"] == "catalog" else "just_a_table"
    assert len(uc_name_problems(resolved)) >= 3


def test_on_databricks_a_one_level_model_name_is_refused(monkeypatch):
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "17.3")
    assert Locations("main", "mm").model_name("router") == "main.mm.router"
    assert Locations().model_name("main.mm.router") == "main.mm.router"
    with pytest.raises(InputError, match="three-level"):
        Locations().model_name("router")
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION")
    assert Locations().model_name("router") == "router"  # the local registry takes one-level names


# ---------------------------------------------------------------- absolute experiment paths

@pytest.mark.parametrize("target", TARGETS)
def test_experiments_are_absolute_workspace_paths(target):
    """A workspace experiment is named by its absolute workspace path
    (https://docs.databricks.com/en/mlflow/experiments.html: "/Users/<user>/<name>" or "/Shared/<name>")."""
    resolved = resolved_target(BUNDLE, target)
    for key, experiment in resolved["resources"]["experiments"].items():
        assert experiment["name"].startswith(("/Users/", "/Shared/", "/Workspace/")), f"{target}: {key}"
    for name in jobs(resolved):
        assert job_defaults(resolved, name)["experiment"].startswith("/"), f"{target}/{name}"


def test_the_code_s_experiment_default_is_absolute_on_a_workspace():
    assert experiment_name("", "databricks", user=lambda: "ana@example.com") == "/Users/ana@example.com/manymodels"
    assert experiment_name("/Shared/x", "databricks") == "/Shared/x"
    assert experiment_name("", "sqlite:///m.db") == "manymodels"
    with pytest.raises(InputError, match="absolute"):
        experiment_name("manymodels", "databricks")


# ---------------------------------------------------------------- no driver-local path where executors read

def driver_path_problems(resolved: dict) -> list[str]:
    problems = []
    for name in jobs(resolved):
        for key, value in job_defaults(resolved, name).items():
            if key not in EXECUTOR_PATH_PARAMS or not value or "/" not in value:
                continue  # empty (derived from the catalog, schema and volume) or a table name
            if not value.startswith("/Volumes/"):
                problems.append(f"{name}: {key}={value!r} is not a volume folder")
    return problems


@pytest.mark.parametrize("target", TARGETS)
def test_executors_read_only_tables_and_volume_folders(target):
    resolved = resolved_target(BUNDLE, target)
    assert driver_path_problems(resolved) == []
    for name, job in jobs(resolved).items():
        d = job_defaults(resolved, name)
        if "staging_dir" in d:
            assert re.fullmatch(r"/Volumes/[^/]+/[^/]+/[^/]+/_staging", d["staging_dir"]), f"{target}/{name}"


def test_the_driver_path_check_can_fail():
    resolved = resolved_target(BUNDLE, "dev")
    for p in jobs(resolved)["nightly"]["parameters"]:
        if p["name"] == "staging_dir":
            p["default"] = "/dbfs/tmp/staging"
        if p["name"] == "input_path":
            p["default"] = ".manymodels/data/panel/parquet"
    assert len(driver_path_problems(resolved)) == 2


def test_the_code_stages_in_the_volume_on_databricks(monkeypatch):
    """Without a staging_dir the jobs derive the volume's _staging folder on Databricks (never the driver's working
    directory), and the search stager's own default is in the volume too."""
    from manymodels.spark.search import default_staging

    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "17.3")
    monkeypatch.setenv("MANYMODELS_USER", "ana")
    monkeypatch.delenv("MANYMODELS_STAGING", raising=False)
    where = Locations("main", "mm", "data")
    assert where.staging_dir() == "/Volumes/main/mm/data/_staging"
    assert where.staging_dir("/Volumes/x/y/z/s") == "/Volumes/x/y/z/s"
    assert where.panel_dir() == "/Volumes/main/mm/data/panel"
    assert default_staging().startswith("/Volumes/")
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION")
    assert where.staging_dir() is None and locations.STAGING_FOLDER == "_staging"


# ---------------------------------------------------------------- production jobs

def test_prod_runs_as_a_service_principal_and_grants_permissions():
    """Production mode wants a run_as identity other than the deploying user and explicit permissions
    (https://docs.databricks.com/en/dev-tools/bundles/deployment-modes.html#production-mode)."""
    prod = target_bundle(BUNDLE, "prod")
    assert BUNDLE["targets"]["prod"]["mode"] == "production"
    assert prod["run_as"]["service_principal_name"] == "${var.service_principal}"
    assert {e["level"] for e in prod["permissions"]} >= {"CAN_MANAGE", "CAN_VIEW"}


def test_the_readme_says_who_must_own_prod_s_models():
    """Only a registered model's owner (or a holder of MANAGE on it) may set its aliases in Unity Catalog
    (https://docs.databricks.com/en/machine-learning/manage-model-lifecycle/index.html, "Set and delete aliases")."""
    text = (REPO_ROOT / "README.md").read_text()
    assert re.search(r"owner[^.]*alias|alias[^.]*owner", text, re.IGNORECASE), "README: who may move aliases"
    assert "service principal" in text


def test_prod_trains_on_its_configured_input_and_generates_nothing():
    resolved = resolved_target(BUNDLE, "prod")
    nightly = job_defaults(resolved, "nightly")
    assert nightly["generate_data"] == "false"
    assert nightly["input_path"].count(".") == 2, "prod's nightly trains on a configured table"
    assert resolved_target(BUNDLE, "dev")["variables"]["generate_data"]["default"] == "true"
    for name in ("weekly_tuning", "fold_ensemble"):
        assert job_defaults(resolved, name)["compare"] == "false", f"{name}: comparisons are opt-in"


@pytest.mark.parametrize("target", TARGETS)
def test_every_job_tells_someone_and_stops_in_time(target):
    """Every job: a timeout, failure notifications to a variable defaulting to the deploying user, and a health rule
    on run duration whose warnings go to the same address (Jobs API: timeout_seconds, email_notifications, health)."""
    resolved = resolved_target(BUNDLE, target)
    for name, job in jobs(resolved).items():
        assert int(job["timeout_seconds"]) > 0, name
        assert job["email_notifications"]["on_failure"] == ["someone@example.com"], name
        rules = job["health"]["rules"]
        assert any(r["metric"] == "RUN_DURATION_SECONDS" and r["op"] == "GREATER_THAN" for r in rules), name
        assert job["email_notifications"]["on_duration_warning_threshold_exceeded"], name
        for task in job["tasks"]:
            if "condition_task" not in task:
                assert int(task["timeout_seconds"]) > 0, f"{name}.{task['task_key']}"


def test_retried_tasks_are_idempotent():
    """A task is retried only when a second attempt cannot do twice what the first did: train registers once per job
    run (training_run_id is the run's id), score replaces its date's partition (score_date is the trigger date)."""
    nightly = jobs(BUNDLE)["nightly"]
    retried = {t["task_key"] for t in nightly["tasks"] if t.get("max_retries")}
    assert retried == {"prepare_data", "train", "register", "score"}
    defaults = {p["name"]: p["default"] for p in nightly["parameters"]}
    assert defaults["training_run_id"] == "{{job.run_id}}"
    assert defaults["score_date"] == "{{job.trigger.time.iso_date}}"
    for name in ("weekly_tuning", "fold_ensemble"):
        assert not any(t.get("max_retries") for t in jobs(BUNDLE)[name]["tasks"]), name


def test_job_parameter_references_are_job_parameters_or_run_values():
    """{{...}} in a job is a job parameter or one of the dynamic values used here
    (https://docs.databricks.com/en/jobs/dynamic-value-references.html)."""
    allowed = {"{{job.run_id}}", "{{job.trigger.time.iso_date}}"}
    for name, job in jobs(BUNDLE).items():
        declared = {p["name"] for p in job["parameters"]}
        for text in re.findall(r"\{\{[^}]*\}\}", str(job)):
            ref = JOB_PARAMETER_REF.fullmatch(text)
            assert (ref and ref[1] in declared) or text in allowed, f"{name}: {text}"
