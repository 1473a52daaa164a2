"""Shared fixtures. Tiers: unit tests need nothing; ``spark`` tests share one local[2] session;
``tracking`` tests share one sqlite MLflow store; cluster tests start their own standalone cluster."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory):
    """Every test session gets its own MANYMODELS_HOME (model tables, MLflow store, data)."""
    home = tmp_path_factory.mktemp("mm_home")
    old = os.environ.get("MANYMODELS_HOME")
    os.environ["MANYMODELS_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("SPARK_REMOTE", None)
    yield home
    if old is None:
        os.environ.pop("MANYMODELS_HOME", None)
    else:
        os.environ["MANYMODELS_HOME"] = old


@pytest.fixture(autouse=True)
def _no_inherited_mlflow_uris():
    """``mlflow.set_tracking_uri`` / ``set_registry_uri`` also export ``MLFLOW_TRACKING_URI`` /
    ``MLFLOW_REGISTRY_URI``: without this, a child process a test starts (a notebook, a job, a cluster
    driver) would log to this session's store instead of its own. This process keeps using the URIs
    MLflow holds in memory."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(name, None)
    yield


@pytest.fixture(scope="session")
def spark(_isolated_home):
    from manymodels.spark.session import get_spark

    session = get_spark("local[2]", app_name="manymodels-tests", conf={
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "4",
        "spark.log.level": "ERROR",
    })
    yield session
    session.stop()


@pytest.fixture(scope="session")
def mlflow_ctx(_isolated_home):
    from manymodels import tracking as tr

    return tr.configure(experiment="manymodels-tests")


@pytest.fixture(scope="session")
def small_panel():
    from manymodels.core.panel import make_panel
    from manymodels.core.spec import PanelSpec

    spec = PanelSpec(n_groups=40, mean_rows=60, n_features=3, seed=11)
    rows, truth = make_panel(spec)
    return spec, rows, truth


@pytest.fixture(scope="session")
def python_exe():
    return sys.executable


def pytest_collection_modifyitems(config, items):
    """A test that asks for the ``spark`` fixture is a Spark test, marked or not: ``make test-fast``
    (``-m "not spark and not cluster and not slow"``) never starts a Spark session."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("spark"):
            item.add_marker(pytest.mark.spark)
