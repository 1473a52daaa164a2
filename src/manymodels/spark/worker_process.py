"""State kept per PySpark Python worker process, for the scoring UDF bodies: less work per task.

A reused Python worker serves task after task, and two costs of each task come from what the process
already holds, not from the data:

- **Garbage collection.** The worker runs a full ``gc.collect()`` after every task (``pyspark/daemon.py``),
  and Python's own full collections during a task walk every object the process holds: after numpy,
  pandas, pyarrow and scikit-learn are imported, about 100,000 objects that are never garbage.
  ``gc.freeze()`` moves the objects alive now into a permanent generation that collections skip
  (Python's documented remedy for long-lived processes). What is frozen is still freed by reference
  counting; only a reference cycle among frozen objects would never be collected. So ``freeze_imports``
  freezes in a Spark task only (never in the driver, a notebook or a test process), at the start of a
  UDF body before any batch is read, and only when the worker imported modules since its last freeze:
  once or twice in a worker's life.
- **Native thread pools.** ``threadpoolctl.threadpool_limits`` scans every loaded shared library
  each time it is built (about 7 ms, a third of a small task's Python time). ``native_threads`` keeps one
  ``ThreadpoolController`` and builds it again only when modules were imported since, since an import
  (a model's library) may load another OpenMP or BLAS runtime.
"""
from __future__ import annotations

import gc
import sys

_frozen_at = 0  # len(sys.modules) at the last freeze
_controller = None
_controller_at = 0  # len(sys.modules) when the controller was built


def freeze_imports() -> bool:
    """Freeze the worker's long-lived objects if modules were imported since the last freeze; True if it froze.
    Outside a Spark task (no ``TaskContext``) it does nothing."""
    global _frozen_at
    if len(sys.modules) == _frozen_at or not in_spark_task():
        return False
    gc.freeze()
    _frozen_at = len(sys.modules)
    return True


def in_spark_task() -> bool:
    try:
        from pyspark import TaskContext
    except ImportError:  # pyspark is an extra: Databricks runtimes bring theirs, a plain install may not have it
        return False
    return TaskContext.get() is not None


def native_threads(limit: int | None):
    """A context manager that caps the native thread pools (OpenMP, BLAS) of this process at ``limit``
    threads while it is open (``None``: no cap), as ``threadpoolctl.threadpool_limits`` does."""
    global _controller, _controller_at
    from threadpoolctl import ThreadpoolController

    if _controller is None or len(sys.modules) != _controller_at:
        _controller, _controller_at = ThreadpoolController(), len(sys.modules)
    return _controller.limit(limits=limit)


def task_attempt() -> str:
    try:
        from pyspark import TaskContext
    except ImportError:  # the pure core also runs without pyspark
        return ""
    ctx = TaskContext.get()
    if ctx is None:
        return "driver"
    return (f"stage={ctx.stageId()} partition={ctx.partitionId()} "
            f"attempt={ctx.attemptNumber()} tid={ctx.taskAttemptId()}")


def with_task_attempt(body, batches, **kwargs):
    """Run the pure ``mapInPandas`` body ``body(batches, attempt=..., **kwargs)`` with the Spark task attempt it
    runs in: the core never imports pyspark, so the Spark layer passes the attempt in."""
    return body(batches, attempt=task_attempt(), **kwargs)
