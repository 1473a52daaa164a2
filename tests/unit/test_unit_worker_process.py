"""Per-worker state of the scoring bodies (worker_process.py), in this process; the Spark side is in
test_spark_inference.py (test_scoring_workers_freeze_their_imports)."""
import gc
import subprocess
import sys
import types

import threadpoolctl
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: F401  (loads scikit-learn's OpenMP runtime)

from manymodels.spark import worker_process


def test_outside_a_spark_task_nothing_is_frozen():
    before = gc.get_freeze_count()
    sys.modules["_mm_test_new_module"] = types.ModuleType("_mm_test_new_module")  # "new imports"
    try:
        assert worker_process.in_spark_task() is False
        assert worker_process.freeze_imports() is False
        assert gc.get_freeze_count() == before
    finally:
        del sys.modules["_mm_test_new_module"]


def test_native_threads_caps_the_pools_and_restores_them():
    openmp = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "openmp"]
    assert openmp, "scikit-learn's OpenMP runtime should be loaded here"
    before = {i["filepath"]: i["num_threads"] for i in openmp}
    with worker_process.native_threads(1):
        inside = {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info()
                  if i["user_api"] == "openmp"}
        assert set(inside.values()) == {1}
    after = {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "openmp"}
    assert after == before


def test_native_threads_reuses_its_controller_until_modules_are_imported():
    with worker_process.native_threads(1):
        pass
    first = worker_process._controller
    with worker_process.native_threads(1):
        pass
    assert worker_process._controller is first  # no rescan of the loaded libraries
    sys.modules["_mm_test_new_module"] = types.ModuleType("_mm_test_new_module")
    try:
        with worker_process.native_threads(1):
            pass
        assert worker_process._controller is not first  # an import may have loaded another runtime
    finally:
        del sys.modules["_mm_test_new_module"]


def test_scoring_workers_do_not_import_mlflow():
    """Scoring workers import the Spark scoring layer and what it reads; mlflow's objects would make every
    garbage collection longer, and a worker has no use for them."""
    code = ("import sys, manymodels.spark.scoring, manymodels.storage.packed_store, manymodels.storage.staging, "
            "manymodels.core.routing; print('mlflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

