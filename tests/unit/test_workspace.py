"""The workspace helper (manymodels.workspace) and `manymodels workspace ...`.

The Databricks workspace API is the one part mocked here: each service the helper uses is a
``create_autospec`` of the SDK's real service class (SchemasAPI, VolumesAPI, FilesAPI, JobsAPI, ...),
so every call is checked against the SDK's own signatures, and the service attribute names are checked
against ``WorkspaceClient``. Requests, responses and errors are the SDK's own dataclasses and
exception classes. No network, no Spark.
"""
from __future__ import annotations

import inspect
from types import SimpleNamespace
from unittest.mock import create_autospec

import pytest
from databricks.sdk import WorkspaceClient, errors
from databricks.sdk.service import catalog, files, iam, jobs, ml
from databricks.sdk.service._internal import Wait

from manymodels import errors as errors_module
from manymodels.core.promotion import GateVerdict
from manymodels.databricks import workspace
from manymodels.databricks.workspace import QualityGateError, WorkspaceError
from manymodels.errors import InputError
from manymodels.jobs import cli
from manymodels.tracking import promotion as tracking_promotion
from manymodels.tracking.promotion import Promotion

SERVICES = {
    "schemas": catalog.SchemasAPI, "volumes": catalog.VolumesAPI, "files": files.FilesAPI, "jobs": jobs.JobsAPI,
    "current_user": iam.CurrentUserAPI, "model_versions": catalog.ModelVersionsAPI,
    "registered_models": catalog.RegisteredModelsAPI, "experiments": ml.ExperimentsAPI,
}


def fake_workspace():
    """A stand-in WorkspaceClient: per-service autospecs of the exact classes the real client returns
    (the SDK's service classes, or its extensions such as FilesExt and JobsExt), under the same names."""
    services = {}
    for name, base in SERVICES.items():
        real = inspect.signature(getattr(WorkspaceClient, name).fget).return_annotation
        assert isinstance(real, type) and issubclass(real, base), f"WorkspaceClient.{name} returns {real}"
        services[name] = create_autospec(real, instance=True)
    return SimpleNamespace(**services)


def quiet(_line: str) -> None:
    pass


# ---------------------------------------------------------------- client

def test_client_uses_the_sdk_standard_configuration_only(monkeypatch):
    made = []
    fake = create_autospec(WorkspaceClient)
    fake.side_effect = lambda **kwargs: made.append(kwargs) or "client"
    monkeypatch.setattr("databricks.sdk.WorkspaceClient", fake)
    assert workspace.client() == "client" and workspace.client("ci") == "client"
    assert made == [{}, {"profile": "ci"}], "no host, token or secret may be passed from code"


# ---------------------------------------------------------------- schema and volume

def test_setup_creates_schema_and_managed_volume():
    w = fake_workspace()
    outcome = workspace.ensure_schema_and_volume(w, "main", "mm", "data", log=quiet)
    assert outcome == {"schema": "created", "volume": "created"}
    assert w.schemas.create.call_args.kwargs["name"] == "mm"
    assert w.schemas.create.call_args.kwargs["catalog_name"] == "main"
    assert w.volumes.create.call_args.kwargs == {"catalog_name": "main", "schema_name": "mm", "name": "data",
                                                 "volume_type": catalog.VolumeType.MANAGED,
                                                 "comment": "manymodels input data"}


def test_setup_is_idempotent_when_both_exist():
    w = fake_workspace()
    w.schemas.create.side_effect = errors.AlreadyExists("Schema 'mm' already exists")
    w.volumes.create.side_effect = errors.ResourceAlreadyExists("Volume 'data' already exists")
    assert workspace.ensure_schema_and_volume(w, "main", "mm", "data", log=quiet) == {"schema": "exists",
                                                                                        "volume": "exists"}


def test_setup_permission_denied_names_the_grant():
    w = fake_workspace()
    w.schemas.create.side_effect = errors.PermissionDenied("User does not have CREATE SCHEMA on Catalog 'main'")
    with pytest.raises(WorkspaceError, match=r"GRANT USE CATALOG, CREATE SCHEMA ON CATALOG main"):
        workspace.ensure_schema_and_volume(w, "main", "mm", "data", log=quiet)
    w.volumes.create.assert_not_called()


def test_setup_volume_permission_denied_names_the_schema_grant():
    w = fake_workspace()
    w.volumes.create.side_effect = errors.PermissionDenied("no CREATE VOLUME")
    with pytest.raises(WorkspaceError, match=r"CREATE VOLUME ON SCHEMA main.mm"):
        workspace.ensure_schema_and_volume(w, "main", "mm", "data", log=quiet)


def test_setup_missing_catalog_says_so():
    w = fake_workspace()
    w.schemas.create.side_effect = errors.NotFound("Catalog 'nope' does not exist.")
    with pytest.raises(WorkspaceError, match=r"Catalog 'nope' does not exist.*--catalog"):
        workspace.ensure_schema_and_volume(w, "nope", "mm", "data", log=quiet)


# ---------------------------------------------------------------- upload

def _prepared(tmp_path):
    root = tmp_path / "panel"
    (root / "gzip" / "store=1").mkdir(parents=True)
    (root / "parquet").mkdir()
    (root / "gzip" / "store=1" / "item=2.csv.gz").write_bytes(b"\x1f\x8b gz")
    (root / "parquet" / "part-0.parquet").write_bytes(b"PAR1 data PAR1")
    (root / "parquet" / ".part-0.parquet.crc").write_bytes(b"crc")
    (root / "holdout.parquet").write_bytes(b"PAR1")
    return root


def test_upload_keeps_relative_paths_and_skips_hidden_files(tmp_path):
    w = fake_workspace()
    sent = {}
    w.files.upload.side_effect = lambda path, contents, overwrite=None: sent.__setitem__(path, contents.read())
    done = workspace.upload(w, _prepared(tmp_path), "/Volumes/main/mm/data/panel", log=quiet)
    assert sorted(sent) == ["/Volumes/main/mm/data/panel/gzip/store=1/item=2.csv.gz",
                            "/Volumes/main/mm/data/panel/holdout.parquet",
                            "/Volumes/main/mm/data/panel/parquet/part-0.parquet"]
    assert sent["/Volumes/main/mm/data/panel/parquet/part-0.parquet"] == b"PAR1 data PAR1"
    assert (done.files, done.bytes) == (3, len(b"\x1f\x8b gz") + len(b"PAR1 data PAR1") + 4)
    made = {call.args[0] for call in w.files.create_directory.call_args_list}
    assert made == {"/Volumes/main/mm/data/panel", "/Volumes/main/mm/data/panel/gzip/store=1",
                    "/Volumes/main/mm/data/panel/parquet"}
    assert all(call.kwargs["overwrite"] is True for call in w.files.upload.call_args_list)


def test_upload_refuses_non_volume_targets_and_missing_sources(tmp_path):
    w = fake_workspace()
    with pytest.raises(WorkspaceError, match="not a volume path"):
        workspace.upload(w, _prepared(tmp_path), "/dbfs/tmp/panel", log=quiet)
    with pytest.raises(WorkspaceError, match="manymodels prepare"):
        workspace.upload(w, tmp_path / "missing", "/Volumes/main/mm/data/panel", log=quiet)
    w.files.upload.assert_not_called()


def test_upload_permission_denied_and_existing_file(tmp_path):
    w = fake_workspace()
    source = _prepared(tmp_path)
    w.files.upload.side_effect = errors.PermissionDenied("no WRITE VOLUME")
    with pytest.raises(WorkspaceError, match="WRITE VOLUME ON VOLUME"):
        workspace.upload(w, source, "/Volumes/main/mm/data/panel", log=quiet)
    w.files.upload.side_effect = errors.AlreadyExists("exists")
    with pytest.raises(WorkspaceError, match="--overwrite"):
        workspace.upload(w, source, "/Volumes/main/mm/data/panel", overwrite=False, log=quiet)


# ---------------------------------------------------------------- finding and running the deployed job

def _job(job_id, name, tags, creator="me@example.com"):
    return jobs.BaseJob(job_id=job_id, creator_user_name=creator,
                        settings=jobs.JobSettings(name=name, tags=tags))


def test_find_job_by_tags_whatever_the_dev_prefix():
    w = fake_workspace()
    w.jobs.list.return_value = iter([
        _job(1, "manymodels_nightly", {"manymodels_job": "nightly", "bundle_target": "prod"}),
        _job(2, "[dev me] manymodels_nightly", {"manymodels_job": "nightly", "bundle_target": "dev", "dev": "me"}),
        _job(3, "[dev me] manymodels_weekly_tuning", {"manymodels_job": "weekly_tuning", "bundle_target": "dev"}),
        _job(4, "unrelated", None),
    ])
    assert workspace.find_job(w, "nightly", "dev").job_id == 2


def test_find_job_prefers_the_current_users_deployment_and_explains_absence():
    w = fake_workspace()
    tags = {"manymodels_job": "nightly", "bundle_target": "dev"}
    w.jobs.list.return_value = iter([_job(7, "[dev you] manymodels_nightly", tags, "you@example.com"),
                                     _job(8, "[dev me] manymodels_nightly", tags, "me@example.com")])
    w.current_user.me.return_value = iam.User(user_name="me@example.com")
    assert workspace.find_job(w, "nightly", "dev").job_id == 8
    w.jobs.list.return_value = iter([])
    with pytest.raises(WorkspaceError, match=r"databricks bundle deploy -t dev"):
        workspace.find_job(w, "nightly", "dev")


def _run(life, result=None, tasks=(), message=""):
    return jobs.Run(run_id=42, run_page_url="https://host/jobs/1/runs/42",
                    state=jobs.RunState(life_cycle_state=jobs.RunLifeCycleState(life),
                                        result_state=jobs.RunResultState(result) if result else None,
                                        state_message=message),
                    tasks=[jobs.RunTask(task_key=key, state=jobs.RunState(
                        life_cycle_state=jobs.RunLifeCycleState(t_life),
                        result_state=jobs.RunResultState(t_result) if t_result else None,
                        state_message=t_msg)) for key, t_life, t_result, t_msg in tasks])


def _started(w, *runs):
    w.jobs.run_now.return_value = Wait(w.jobs.wait_get_run_job_terminated_or_skipped,
                                       response=jobs.RunNowResponse(run_id=42), run_id=42)
    w.jobs.get_run.side_effect = list(runs)


def test_run_passes_parameters_reports_progress_and_returns_state_and_url():
    w = fake_workspace()
    _started(w,
             _run("PENDING", tasks=[("prepare_data", "PENDING", None, "")]),
             _run("RUNNING", tasks=[("prepare_data", "RUNNING", None, ""), ("train", "PENDING", None, "")]),
             _run("TERMINATED", "SUCCESS", tasks=[("prepare_data", "TERMINATED", "SUCCESS", ""),
                                                  ("train", "TERMINATED", "SUCCESS", "")]))
    lines, naps = [], []
    result = workspace.run_job(w, 123, {"n_groups": "200"}, only=["prepare_data", "train"], log=lines.append,
                               sleep=naps.append, clock=iter(range(0, 1000, 5)).__next__)
    w.jobs.run_now.assert_called_once_with(job_id=123, job_parameters={"n_groups": "200"},
                                           only=["prepare_data", "train"])
    assert result.succeeded and result.url == "https://host/jobs/1/runs/42"
    assert result.tasks == {"prepare_data": "SUCCESS", "train": "SUCCESS"}
    assert any("prepare_data: RUNNING" in line for line in lines) and any("train: SUCCESS" in line for line in lines)
    assert len(naps) == 2 and w.jobs.get_run.call_count == 3


def test_run_failed_returns_the_failing_task_and_its_message():
    w = fake_workspace()
    _started(w, _run("TERMINATED", "FAILED", message="Task train failed",
                     tasks=[("prepare_data", "TERMINATED", "SUCCESS", ""),
                            ("train", "TERMINATED", "FAILED", "InputError: label_col 'y' not found"),
                            ("register", "TERMINATED", "UPSTREAM_FAILED", "")]))
    result = workspace.run_job(w, 123, {}, log=quiet, sleep=quiet)
    assert not result.succeeded and result.result_state == "FAILED"
    assert "train: InputError: label_col 'y' not found" in result.message
    assert result.url.endswith("/runs/42")


def test_run_timeout_is_bounded_and_says_the_run_continues():
    w = fake_workspace()
    _started(w, *[_run("RUNNING")] * 5)
    with pytest.raises(WorkspaceError, match="keeps running.*cancel-run 42"):
        workspace.run_job(w, 123, {}, timeout_s=10, log=quiet, sleep=quiet, clock=iter(range(0, 100, 6)).__next__)


def test_run_permission_denied():
    w = fake_workspace()
    w.jobs.run_now.side_effect = errors.PermissionDenied("no CAN_MANAGE_RUN")
    with pytest.raises(WorkspaceError, match="CAN MANAGE RUN"):
        workspace.run_job(w, 123, {}, log=quiet, sleep=quiet)


# ---------------------------------------------------------------- register step (quality gate + @champion)

class RecordedPromote:
    """Stands in for ``tracking.promotion.promote``: records its call, returns a passed or failed verdict."""

    def __init__(self, passed=True):
        self.calls, self.passed = [], passed

    def __call__(self, name, **kwargs):
        self.calls.append((name, kwargs))
        verdict = GateVerdict(self.passed, [] if self.passed else ["median worse"], ok_fraction=0.99)
        promotion = Promotion(name, 5, kwargs["champion_alias"], verdict, self.passed and not kwargs["dry_run"])
        if not self.passed and not kwargs["dry_run"]:
            raise QualityGateError(f"{name} v5 failed the quality gate\n{verdict.summary()}", promotion)
        return promotion


@pytest.fixture
def recorded(monkeypatch):
    record = RecordedPromote()
    monkeypatch.setattr(tracking_promotion, "promote", record)
    return record


def test_promote_delegates_the_decision_to_the_tracking_gate_on_the_workspace(recorded):
    w = fake_workspace()
    done = workspace.promote(w, "main.mm.router", "challenger", "champion", 0.9, metric="holdout_r2",
                             max_median_worse=0.05, dry_run=True, log=quiet)
    assert (done.version, done.ok_fraction) == (5, 0.99)
    [(name, kwargs)] = recorded.calls
    assert name == "main.mm.router"
    client = kwargs.pop("client")
    assert (client.tracking_uri, client._registry_uri) == ("databricks", "databricks-uc")
    assert kwargs == {"alias": "challenger", "champion_alias": "champion", "metric": "holdout_r2",
                      "max_median_worse": 0.05, "max_worse_fraction": 0.6, "min_shared_fraction": 0.5,
                      "min_ok_fraction": 0.9, "dry_run": True, "log": quiet}
    for service in SERVICES:  # the SDK is not called: MLflow's client decides and moves the alias
        assert getattr(w, service).method_calls == [], service


def test_promote_uses_the_workspace_client_s_profile_for_mlflow():
    w = SimpleNamespace(config=SimpleNamespace(profile="ci"))
    client = workspace.mlflow_client(w)
    assert (client.tracking_uri, client._registry_uri) == ("databricks://ci", "databricks-uc://ci")


def test_promote_refuses_a_name_outside_unity_catalog(recorded):
    with pytest.raises(WorkspaceError, match="catalog.schema.model"):
        workspace.promote(fake_workspace(), "router", log=quiet)
    assert recorded.calls == []


@pytest.mark.parametrize("fraction", [float("nan"), float("inf"), -0.5, 1.01, "nan", "most", None, True])
def test_promote_refuses_a_gate_that_is_not_a_fraction_before_any_call(recorded, fraction):
    with pytest.raises(InputError, match=r"min_ok_fraction=.*expected a number between 0 and 1"):
        workspace.promote(fake_workspace(), "main.mm.router", min_ok_fraction=fraction, log=quiet)
    with pytest.raises(InputError, match=r"max_median_worse=.*expected a finite number >= 0"):
        workspace.promote(fake_workspace(), "main.mm.router", max_median_worse=-0.1, log=quiet)
    assert recorded.calls == []


def test_quality_gate_error_is_still_importable_from_the_workspace_module():
    assert QualityGateError is errors_module.QualityGateError


@pytest.mark.parametrize("argv", [["workspace", "promote", "--model_name=c.s.m", "--min_ok_fraction=nan"],
                                  ["workspace", "promote", "--model_name=c.s.m", "--min_ok_fraction=inf"],
                                  ["workspace", "run", "nightly", "--timeout=nan"]])
def test_cli_refuses_nan_gates_naming_the_option(monkeypatch, capsys, argv):
    monkeypatch.setattr(workspace, "client", lambda profile=None: pytest.fail("no workspace call expected"))
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    name = argv[-1].split("=")[0].lstrip("-")
    assert f"argument --{name}: {name}=" in capsys.readouterr().err


def test_run_job_refuses_a_nan_timeout():
    w = fake_workspace()
    with pytest.raises(InputError, match="timeout=nan"):
        workspace.run_job(w, 1, {}, timeout_s=float("nan"), log=quiet, sleep=quiet)
    w.jobs.run_now.assert_not_called()


# ---------------------------------------------------------------- the command line

def test_cli_workspace_run_finds_the_job_and_exits_nonzero_on_failure(monkeypatch):
    w = fake_workspace()
    monkeypatch.setattr(workspace, "client", lambda profile=None: w)
    w.jobs.list.return_value = iter([_job(9, "[dev me] manymodels_nightly",
                                          {"manymodels_job": "nightly", "bundle_target": "dev"})])
    _started(w, _run("TERMINATED", "FAILED", tasks=[("train", "TERMINATED", "FAILED", "boom")]))
    monkeypatch.setattr(workspace.time, "sleep", quiet)
    code = cli.main(["workspace", "run", "nightly", "--param", "n_groups=50", "--only", "train,register"])
    assert code == 1
    w.jobs.run_now.assert_called_once_with(job_id=9, job_parameters={"n_groups": "50"}, only=["train", "register"])


def test_cli_workspace_setup_and_promote_options(monkeypatch, recorded):
    w = fake_workspace()
    monkeypatch.setattr(workspace, "client", lambda profile=None: w)
    assert cli.main(["workspace", "setup", "--catalog", "c", "--schema", "s", "--volume", "v"]) == 0
    assert w.volumes.create.call_args.kwargs["name"] == "v"
    assert cli.main(["workspace", "promote", "--model_name=c.s.m", "--alias=challenger", "--champion_alias=champion",
                     "--min_ok_fraction=0.9", "--metric=", "--max_median_worse=0.02", "--max_worse_fraction=0.4",
                     "--min_shared_fraction=0.8"]) == 0
    [(name, kwargs)] = recorded.calls
    assert name == "c.s.m" and kwargs["metric"] is None and kwargs["dry_run"] is False
    assert (kwargs["min_ok_fraction"], kwargs["max_median_worse"], kwargs["max_worse_fraction"],
            kwargs["min_shared_fraction"]) == (0.9, 0.02, 0.4, 0.8)


def test_cli_promote_exits_1_with_the_reasons_when_the_gate_fails(monkeypatch, capsys, recorded):
    monkeypatch.setattr(workspace, "client", lambda profile=None: fake_workspace())
    recorded.passed = False
    assert cli.main(["workspace", "promote", "--model_name=c.s.m"]) == 1
    err = capsys.readouterr().err
    assert "c.s.m v5 failed the quality gate" in err and "median worse" in err and "Traceback" not in err
    assert cli.main(["workspace", "promote", "--model_name=c.s.m", "--dry-run"]) == 1  # a failed dry run too
    assert recorded.calls[-1][1]["dry_run"] is True


def test_cli_promote_runs_the_same_gate_on_the_configured_registry(monkeypatch, recorded):
    import manymodels.tracking

    configured = []
    monkeypatch.setattr(manymodels.tracking, "configure", lambda **kwargs: configured.append(kwargs))
    monkeypatch.setattr(workspace, "client", lambda profile=None: pytest.fail("no workspace client expected"))
    assert cli.main(["promote", "--dry-run", "--metric=holdout_r2", "--max-worse-fraction=0.6"]) == 0
    [(name, kwargs)] = recorded.calls
    assert name == "manymodels_router" and "client" not in kwargs
    assert configured == [{"experiment": None, "create": False}]
    assert (kwargs["dry_run"], kwargs["metric"], kwargs["max_worse_fraction"]) == (True, "holdout_r2", 0.6)


# ---------------------------------------------------------------- Spark and MLflow on Databricks

def _fake_databricks_connect(monkeypatch):
    """databricks-connect conflicts with pyspark, so it is not installed here: a stand-in module."""
    import sys
    import types

    made = []
    builder = SimpleNamespace(getOrCreate=lambda: made.append("session") or "databricks-connect-session")
    module = types.ModuleType("databricks.connect")
    module.DatabricksSession = SimpleNamespace(builder=builder)
    monkeypatch.setitem(sys.modules, "databricks.connect", module)
    return made


def test_session_uses_databricks_connect_when_installed_and_configured(monkeypatch):
    from manymodels.spark import session

    made = _fake_databricks_connect(monkeypatch)
    for name in session.DATABRICKS_CONNECT_ENV + ("DATABRICKS_RUNTIME_VERSION",):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "placeholder")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # restored by monkeypatch after the test
    assert session.databricks_connect_session() is None, "not configured: no remote session"
    monkeypatch.setenv("MANYMODELS_DATABRICKS_CONNECT", "0")
    assert session.databricks_connect_session() is None and made == []
    monkeypatch.setenv("DATABRICKS_CLUSTER_ID", "0123-456789-abcdefgh")
    assert session.get_spark() == "databricks-connect-session" and made == ["session"]
    import os

    assert os.environ["MLFLOW_TRACKING_URI"] == "databricks"


def test_session_without_databricks_connect_installed_falls_through(monkeypatch):
    import sys

    from manymodels.spark import session

    monkeypatch.setitem(sys.modules, "databricks.connect", None)  # import raises ImportError
    monkeypatch.setenv("DATABRICKS_CLUSTER_ID", "0123-456789-abcdefgh")
    assert session.databricks_connect_session() is None


def test_unity_catalog_model_names_have_three_levels():
    from manymodels import tracking

    assert tracking.model_name("router", "main", "mm") == "main.mm.router"
    assert tracking.model_name("main.mm.router", "other", "x") == "main.mm.router"
    assert tracking.model_name("router") == "router"
