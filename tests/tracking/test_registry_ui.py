"""The registry as a person browses it: after a small training run, `mlflow server` on 127.0.0.1 serves the
test's sqlite store and artifact root, and headless Chromium (Debian's `chromium`, installed by
`make chromium`, which `make test` runs) opens the registered model's page. The page must show the model,
the version this run registered and its alias. The screenshot is saved under the test's tmp folder and
copied to docs/registry_model_page.png for the README. Skipped, with the reason, only when Chromium is
not installed and cannot be.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from processes import mlflow_server
from sklearn.linear_model import LinearRegression

from manymodels import tracking
from manymodels.spark.training import train_per_group

pytestmark = [pytest.mark.spark, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
NAME = "registry_ui_router"
ALIAS = "champion"
DOCS_SCREENSHOT = ROOT / "docs" / "registry_model_page.png"
CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser")


def find_chromium() -> str | None:
    return next((found for name in CHROMIUM if (found := shutil.which(name))), None)


@pytest.fixture(scope="module")
def chromium() -> str:
    found = find_chromium()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            subprocess.run(command, env=env, capture_output=True, timeout=900, check=False)
        found = find_chromium()
    if found is None:
        pytest.skip("Chromium is not installed and could not be installed (needs root and apt-get: "
                    "`apt-get install -y chromium`, or `make chromium`)")
    return found


@pytest.fixture(scope="module")
def logged(spark, mlflow_ctx, small_panel, tmp_path_factory):
    _, rows, _ = small_panel
    small = rows[rows["store"] < 2]
    table = train_per_group(spark.createDataFrame(small), group_cols=["store", "item"], feature_cols=["x0", "x1", "x2"],
                            label_col="y", estimator=LinearRegression(), training_run_id="registry-ui-1",
                            location=str(tmp_path_factory.mktemp("ui") / "table"))
    return tracking.log_training(spark, table, mlflow_ctx, name=NAME, alias=ALIAS)


@pytest.fixture(scope="module")
def server(logged, mlflow_ctx, tmp_path_factory):
    home = Path(os.environ["MANYMODELS_HOME"])
    with mlflow_server(mlflow_ctx.tracking_uri, ["--default-artifact-root", (home / "mlartifacts").as_uri()],
                       tmp_path_factory.mktemp("server") / "mlflow-server.log") as url:
        yield url


def chromium_run(chromium: str, url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'profile'}", "--window-size=1400,900",
         "--virtual-time-budget=20000", *extra, url],
        capture_output=True, text=True, timeout=180, check=False)


def test_registered_model_page_shows_model_version_and_alias(chromium, server, logged, tmp_path):
    url = f"{server}/#/models/{NAME}"
    dom = chromium_run(chromium, url, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    assert NAME in text, f"model name not on the page {url}"
    assert f"Version {logged.version}" in text, f"version {logged.version} not on the page"
    assert ALIAS in text, f"alias @{ALIAS} not on the page"

    shot = tmp_path / "registry_model_page.png"
    result = chromium_run(chromium, url, tmp_path, f"--screenshot={shot}")
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, DOCS_SCREENSHOT)
