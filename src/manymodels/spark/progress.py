"""Progress of a long training job on the driver's console (and so in a notebook cell's output).

The fitting stage has one task per planned partition, and the plan knows how many groups each
partition holds, so finished tasks translate into groups done. Task counts come from Spark itself:
under Spark Connect from the session's progress handler (``registerProgressHandler``); on a classic
session from its status tracker, polled by a daemon thread. Progress is observability only: when
neither source is available the job runs the same, with a start and an end line.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass

from manymodels.settings import PROGRESS_ENV
from manymodels.spark.session import is_connect

DEFAULT_INTERVAL = 10.0


@dataclass
class StageCount:
    stage_id: int
    num_tasks: int
    num_completed: int


def interval_seconds(value: float | bool | None) -> float | None:
    """Seconds between progress lines; ``None`` turns reporting off (``False``, 0 or a negative value)."""
    if value is None:
        value = float(os.environ.get(PROGRESS_ENV, DEFAULT_INTERVAL))
    if value is False or value <= 0:
        return None
    return 1e-9 if value is True else float(value)


def groups_done(tasks_done: int, task_groups: list[int]) -> int:
    """Groups in the ``tasks_done`` smallest tasks: a lower bound that never overstates progress."""
    return sum(sorted(task_groups)[:tasks_done])


def line(label: str, n_groups: int, task_groups: list[int], tasks_done: int, seconds: float) -> str:
    done = groups_done(tasks_done, task_groups)
    return (f"manymodels: {label}: {tasks_done}/{len(task_groups)} tasks, >= {done:,} of {n_groups:,} groups done, "
            f"{seconds:.1f} s")


class Progress:
    """Context manager around one training job; prints to ``out`` at most every ``interval`` seconds."""

    def __init__(self, spark, label: str, task_groups: list[int], interval: float | bool | None = None, out=None):
        self.spark, self.label, self.task_groups = spark, label, list(task_groups)
        self.n_groups = sum(self.task_groups)
        self.interval = interval_seconds(interval)
        self.out = out or sys.stdout
        self.best = 0  # completed tasks of the fitting stage seen so far
        self._stop = threading.Event()
        self._last = 0.0
        self._start = time.perf_counter()
        self._thread = None
        self._handler = None

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def observe(self, stages: list[StageCount], force: bool = False) -> None:
        """Take task counts of the active stages; print when the fitting stage advanced and it is time."""
        fitting = [s for s in stages if s.num_tasks == len(self.task_groups)]
        if fitting:
            self.best = max(self.best, max(s.num_completed for s in fitting))
        now = time.perf_counter()
        if force or (self.interval is not None and now - self._last >= self.interval and fitting):
            self._last = now
            self._print(line(self.label, self.n_groups, self.task_groups, self.best, now - self._start))

    def __enter__(self) -> "Progress":
        if self.interval is None:
            return self
        self._print(f"manymodels: {self.label}: {self.n_groups:,} groups in {len(self.task_groups)} tasks")
        self._last = time.perf_counter()

        if is_connect(self.spark):
            self._handler = self._on_connect_progress
            self.spark.registerProgressHandler(self._handler)
        else:
            tracker = _classic_tracker(self.spark)
            if tracker is not None:
                self._thread = threading.Thread(target=self._poll, args=(tracker,), daemon=True,
                                                name="manymodels-progress")
                self._thread.start()
        return self

    def _on_connect_progress(self, stages=None, inflight_tasks=0, operation_id=None, done=False) -> None:
        self.observe([StageCount(s.stage_id, s.num_tasks, s.num_completed_tasks) for s in stages or []])

    def _poll(self, tracker) -> None:
        while not self._stop.wait(min(1.0, self.interval)):
            try:
                infos = [tracker.getStageInfo(i) for i in tracker.getActiveStageIds()]
            except Exception:  # noqa: BLE001 - a closing session; progress is best effort
                return
            self.observe([StageCount(i.stageId, i.numTasks, i.numCompletedTasks) for i in infos if i])

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._handler is not None:
            self.spark.removeProgressHandler(self._handler)
        if self.interval is not None and exc_type is None:
            self.best = len(self.task_groups)  # the job returned: every task finished
            self.observe([], force=True)


def _classic_tracker(spark):
    """The classic session's status tracker (the same object ``SparkContext.statusTracker()`` returns)."""
    try:
        from pyspark.core.status import StatusTracker

        return StatusTracker(spark._jsc.statusTracker())
    except Exception:  # noqa: BLE001 - not a classic JVM-backed session: no task counts, only start/end lines
        return None
