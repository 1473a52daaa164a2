"""Progress of a long Spark job on the driver: training, per-group search, global search, fold-ensemble members and
scoring. Observability only: the job runs the same when nothing can be observed, and no failure here reaches it.

What is counted: the job's *work stage*, the stage that runs the Python UDF over the planned partitions (found by
its operation graph on a classic session: a ``MapIn...`` node reading a shuffle, the latest such stage; by its
number of tasks under Spark Connect). The plan knows the groups and rows of each task (``TaskPlan``), so finished
tasks become groups done, and the running tasks are credited by time (``estimate_groups``): the bar moves before
the first task ends. Without a plan (scoring) the unit is the work stage's tasks.

Task counts come from Spark: on a classic session from its status tracker, polled by a daemon thread; under Spark
Connect from the session's progress handler (``registerProgressHandler``) when the client has one, else none.

Shown as: a ``tqdm.auto`` bar (a widget in notebooks, text on a terminal's stderr) when a notebook runs or stderr is
a terminal; otherwise (job logs) lines on the ``manymodels.progress`` logger every ``MANYMODELS_PROGRESS_SECONDS``
(default 10). ``MANYMODELS_PROGRESS=0`` turns the bar off (the lines stay), ``1`` forces it; ``progress=False`` (or
``MANYMODELS_PROGRESS_SECONDS=0``) turns both off. The start and end lines are always logged (INFO).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass

from manymodels.core.planning import BIN_COL, partition_labels
from manymodels.settings import PROGRESS_BAR_ENV, PROGRESS_ENV
from manymodels.spark.session import is_connect

log = logging.getLogger("manymodels.progress")

DEFAULT_INTERVAL = 10.0
POLL_SECONDS = 0.5  # how often the status tracker is read while a bar is shown
# Before any task has ended nothing measures the speed: each running task is credited s / (s + 30 s) of half its
# groups (s: seconds since the work stage started), so a long first task does not look stuck, without claiming
# much. Once a task ends, the credit follows the measured seconds per planned row, up to RUNNING_CAP of a task.
FIRST_TASK_SECONDS = 30.0
RUNNING_CAP = 0.95


@dataclass
class StageCount:
    stage_id: int
    num_tasks: int
    num_completed: int
    num_active: int = 0
    work: bool | None = None  # runs the Python UDF over a shuffle (classic sessions); None: unknown


class TaskPlan(list):
    """Groups per planned task, in partition order (a list of ints), with each task's planned rows in ``rows``
    (any positive weight of its work; the groups themselves when unknown)."""

    def __init__(self, groups=(), rows=None):
        super().__init__(int(g) for g in groups)
        self.rows = [float(r) for r in rows] if rows is not None else [float(g) for g in self]
        if len(self.rows) != len(self):
            raise ValueError(f"TaskPlan: {len(self)} tasks of groups but {len(self.rows)} of rows")


def task_plan(packing) -> TaskPlan:
    """Groups and planned rows of each task of a ``spark.packing.Packing`` (its assignment's ``count`` column)."""
    labels = partition_labels(packing.n_parts)
    by_bin = packing.assignment.groupby(BIN_COL)
    groups = by_bin.size().reindex(labels, fill_value=0)
    rows = by_bin["count"].sum().reindex(labels, fill_value=0) if "count" in packing.assignment else groups
    return TaskPlan(groups.tolist(), rows.tolist())


def items_per_task(bins, n_tasks: int, costs=None) -> TaskPlan:
    """A plan whose item ``i`` runs in task ``bins[i]`` (0..n_tasks-1), weighted by ``costs`` (e.g. the global
    search's (candidate, fold) fits and their estimated costs)."""
    groups, rows = [0] * n_tasks, [0.0] * n_tasks
    for i, b in enumerate(bins):
        groups[int(b)] += 1
        rows[int(b)] += 1.0 if costs is None else float(costs[i])
    return TaskPlan(groups, rows)


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


def estimate_groups(groups, rows, done: int, active: int, elapsed: float, seconds_per_row: float | None = None,
                    slots: int | None = None) -> float:
    """Groups done, estimated: those of the ``done`` finished tasks (taken as the smallest: a lower bound), plus a
    credit for the ``active`` running ones after ``elapsed`` seconds of the work stage.

    With ``seconds_per_row`` (measured: stage seconds x ``slots`` / rows of the finished tasks) the slots have
    processed ``elapsed x slots / seconds_per_row`` planned rows; those beyond the finished tasks' rows count at the
    remaining tasks' groups per row, up to ``RUNNING_CAP`` of the running tasks. Before any task ends (no rate),
    each running task gets ``elapsed / (elapsed + FIRST_TASK_SECONDS)`` of half its groups."""
    order = finishing_order(groups, rows)
    finished = sum(groups[i] for i in order[:done])
    rest = order[done:]
    active = min(max(int(active), 0), len(rest))
    if not active or elapsed <= 0:
        return float(finished)
    rest_groups = sum(groups[i] for i in rest)
    rest_rows = sum(rows[i] for i in rest) or float(len(rest))
    if not seconds_per_row:
        return finished + active * rest_groups / len(rest) * 0.5 * elapsed / (elapsed + FIRST_TASK_SECONDS)
    finished_rows = sum(rows[i] for i in order[:done])
    processed = elapsed * max(slots or active, 1) / seconds_per_row - finished_rows
    running_rows = RUNNING_CAP * active * rest_rows / len(rest)
    return finished + min(max(processed, 0.0), running_rows) * rest_groups / rest_rows


def finishing_order(groups, rows) -> list[int]:
    """The tasks as the estimate takes them to finish: fewest groups (then rows) first."""
    return sorted(range(len(groups)), key=lambda i: (groups[i], rows[i]))


class Estimate:
    """``estimate_groups`` over time for one plan: when the work stage started, the most slots seen busy, and the
    seconds per planned row measured each time a task ends."""

    def __init__(self, plan: TaskPlan):
        self.plan = plan
        self.started: float | None = None
        self.done = 0
        self.slots = 0
        self.seconds_per_row: float | None = None

    def update(self, done: int, active: int, now: float) -> float:
        if self.started is None:
            if not (done or active):
                return 0.0
            self.started = now
        self.slots = max(self.slots, active, 1)
        elapsed = now - self.started
        if done > self.done:
            self.done = done
            rows = sum(self.plan.rows[i] for i in finishing_order(self.plan, self.plan.rows)[:done]) or 1.0
            self.seconds_per_row = max(elapsed, 1e-3) * self.slots / rows
        return estimate_groups(self.plan, self.plan.rows, self.done, active, elapsed, self.seconds_per_row,
                               self.slots)


def line(label: str, n_groups: int, task_groups: list[int], tasks_done: int, seconds: float,
         estimate: float | None = None, eta: float | None = None, unit: str = "group") -> str:
    done = groups_done(tasks_done, task_groups)
    text = (f"manymodels: {label}: {tasks_done}/{len(task_groups)} tasks, >= {done:,} of {n_groups:,} {unit}s done, "
            f"{seconds:.1f} s")
    if estimate is not None and estimate > done:
        text += f", about {estimate:,.0f} estimated"
    if eta is not None:
        text += f", ETA {eta:.0f} s"
    return text


def in_notebook() -> bool:
    """An IPython kernel (Jupyter, Databricks notebooks) runs this process: tqdm.auto shows a widget there."""
    return "ipykernel.zmqshell" in sys.modules


def bar_wanted() -> bool:
    """``MANYMODELS_PROGRESS``: 0/false/off never, 1/true/on always; unset: in a notebook or on a terminal."""
    value = os.environ.get(PROGRESS_BAR_ENV, "").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    try:
        return in_notebook() or sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return False


def bar_class():
    """``tqdm.auto.tqdm`` (imported when a bar is shown: it picks the notebook widget or the text bar then)."""
    from tqdm.auto import tqdm

    return tqdm


class Progress:
    """Context manager around one Spark job: a bar or log lines of ``label`` while it runs (see the module).

    ``task_groups``: the plan (a ``TaskPlan``, or groups per task), or None to count the work stage's tasks.
    ``interval``: seconds between log lines (None: ``MANYMODELS_PROGRESS_SECONDS`` or 10; False: no progress).
    ``bar``: show a bar (None: ``bar_wanted()``). ``unit``: what the plan counts, singular (group, fit, member)."""

    def __init__(self, spark, label: str, task_groups=None, interval: float | bool | None = None, *,
                 unit: str = "group", bar: bool | None = None):
        self.spark, self.label, self.unit = spark, label, unit
        plan = None if task_groups is None else (task_groups if isinstance(task_groups, TaskPlan)
                                                 else TaskPlan(task_groups))
        self.plan = plan
        self.task_groups = list(plan or [])
        self.n_groups = sum(self.task_groups)
        self.interval = interval_seconds(interval)
        self.show_bar = self.interval is not None and (bar_wanted() if bar is None else bool(bar))
        self.best = 0  # completed tasks of the work stage seen so far
        self.total_tasks = len(self.task_groups) if plan is not None else None
        self.value = 0.0  # groups (tasks, without a plan) done, estimated; never goes back
        self.bar = None
        self._estimate = Estimate(plan) if plan is not None else None
        self._stage: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last = 0.0
        self._start = time.perf_counter()
        self._thread = None
        self._handler = None
        self._work: dict[int, bool | None] = {}

    # ------------------------------------------------------------ counting

    def _pick(self, stages: list[StageCount]) -> StageCount | None:
        """The work stage: the latest stage known to run the UDF over a shuffle, else (unknown) the latest one
        with the plan's number of tasks."""
        n = len(self.task_groups)
        if any(s.work for s in stages):
            candidates = [s for s in stages if s.work and (not n or s.num_tasks == n)]
        else:
            candidates = [s for s in stages if s.work is None and (not n or s.num_tasks == n)]
        return max(candidates, key=lambda s: s.stage_id, default=None)

    def observe(self, stages: list[StageCount], force: bool = False) -> None:
        """Take task counts of the active stages; refresh the bar, or log when it is time."""
        with self._lock:
            now = time.perf_counter()
            stage = self._pick(stages)
            if stage is not None:
                if self._stage is None or stage.stage_id > self._stage:  # a later work stage: count that one
                    if self._stage is not None:
                        self.best = 0
                        self._estimate = Estimate(self.plan) if self.plan is not None else None
                    self._stage = stage.stage_id
                if stage.stage_id == self._stage:
                    self.best = max(self.best, stage.num_completed)  # a retried attempt restarts its count
                    if self.plan is None:
                        self.total_tasks = stage.num_tasks
                        self.value = max(self.value, float(self.best))
                    else:
                        self.value = max(self.value, self._estimate.update(self.best, stage.num_active, now))
            self._render(now, force or (stage is not None and self.interval is not None
                                        and now - self._last >= self.interval))

    def _eta(self, now: float) -> float | None:
        """Seconds left at the pace so far; None until a task has ended (before that the pace is a guess)."""
        total = self.n_groups if self.plan is not None else self.total_tasks
        elapsed = now - self._start
        if not total or self.value <= 0 or self.value >= total or self.best == 0:
            return None
        return elapsed * (total - self.value) / self.value

    def text(self, now: float | None = None) -> str:
        now = time.perf_counter() if now is None else now
        seconds = now - self._start
        if self.plan is None:
            total = "?" if self.total_tasks is None else f"{self.total_tasks:,}"
            return f"manymodels: {self.label}: {self.best:,}/{total} tasks, {seconds:.1f} s"
        return line(self.label, self.n_groups, self.task_groups, self.best, seconds, self.value, self._eta(now),
                    self.unit)

    def _render(self, now: float, log_now: bool) -> None:
        if self.bar is not None:
            try:
                if self.plan is None and self.total_tasks is not None and self.bar.total != self.total_tasks:
                    self.bar.total = self.total_tasks
                step = int(self.value) - self.bar.n
                if self.total_tasks:
                    self.bar.set_postfix_str(f"{self.best}/{self.total_tasks} tasks", refresh=False)
                self.bar.update(step) if step > 0 else self.bar.refresh()
            except Exception:  # noqa: BLE001 - a closed widget or stream: go on without the bar
                self.bar = None
        elif log_now:
            self._last = now
            log.info(self.text(now))

    # ------------------------------------------------------------ sources

    def __enter__(self) -> "Progress":
        if self.interval is None:
            return self
        planned = f"{self.n_groups:,} {self.unit}s in {len(self.task_groups)} tasks"
        log.info(f"manymodels: {self.label}: {planned if self.plan is not None else 'started'}")
        self._last = time.perf_counter()
        if self.show_bar:
            self.bar = self._open_bar()
        try:
            self._attach()
        except Exception:  # noqa: BLE001 - no task counts: the job runs the same, with a start and an end line
            log.debug("manymodels: progress has no task counts for this session", exc_info=True)
        return self

    def _open_bar(self):
        interactive = in_notebook() or _isatty()
        try:
            return bar_class()(total=(self.n_groups if self.plan is not None else None) or None, desc=self.label,
                               unit=self.unit if self.plan is not None else "task", dynamic_ncols=True,
                               leave=True, smoothing=0.1, mininterval=0.5 if interactive else self.interval)
        except Exception:  # noqa: BLE001 - e.g. a notebook without ipywidgets: log lines instead
            log.debug("manymodels: no progress bar", exc_info=True)
            return None

    def _attach(self) -> None:
        if is_connect(self.spark):
            register = getattr(self.spark, "registerProgressHandler", None)
            if register is not None:
                self._handler = self._on_connect_progress
                register(self._handler)
            return
        sources = _classic_tracker(self.spark)  # (status tracker, status store)
        if sources is not None:
            self._thread = threading.Thread(target=self._poll, args=sources, daemon=True,
                                            name="manymodels-progress")
            self._thread.start()

    def _on_connect_progress(self, stages=None, inflight_tasks=0, operation_id=None, done=False, **_) -> None:
        try:
            self.observe([StageCount(s.stage_id, s.num_tasks, s.num_completed_tasks, inflight_tasks)
                          for s in stages or []])
        except Exception:  # noqa: BLE001 - never in the way of the job
            pass

    def _poll(self, tracker, store) -> None:
        period = POLL_SECONDS if self.bar is not None else min(1.0, self.interval)
        while not self._stop.wait(period):
            try:
                infos = [tracker.getStageInfo(i) for i in tracker.getActiveStageIds()]
                stages = [StageCount(i.stageId, i.numTasks, i.numCompletedTasks, i.numActiveTasks,
                                     self._is_work(store, i.stageId)) for i in infos if i]
            except Exception:  # noqa: BLE001 - a closing session; progress is best effort
                return
            self.observe(stages)

    def _is_work(self, store, stage_id: int) -> bool | None:
        """Whether the stage runs a Python ``MapIn...`` UDF over a shuffle, from its operation graph (cached)."""
        if stage_id not in self._work:
            try:
                names = _graph_names(store.operationGraphForStage(stage_id).rootCluster())
                self._work[stage_id] = (any("MapIn" in n for n in names)
                                        and (self.plan is None or any("Shuffled" in n for n in names)))
            except Exception:  # noqa: BLE001 - no graph (another Spark build): match by task count
                self._work[stage_id] = None
        return self._work[stage_id]

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._handler is not None:
            try:
                self.spark.removeProgressHandler(self._handler)
            except Exception:  # noqa: BLE001
                pass
        if self.interval is None:
            return
        with self._lock:
            if exc_type is None:  # the job returned: every task finished
                self.best = self.total_tasks or self.best
                self.value = float(self.n_groups if self.plan is not None else self.best)
                self._render(time.perf_counter(), False)
            bar, self.bar = self.bar, None
        if bar is not None:
            try:
                bar.close()
            except Exception:  # noqa: BLE001
                pass
        if exc_type is None:
            log.info(self.text())


def _isatty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _graph_names(cluster) -> list[str]:
    names = [cluster.name()]
    nodes = cluster.childNodes().iterator()
    while nodes.hasNext():
        names.append(nodes.next().name())
    clusters = cluster.childClusters().iterator()
    while clusters.hasNext():
        names.extend(_graph_names(clusters.next()))
    return names


def _classic_tracker(spark):
    """``(status tracker, status store)`` of a classic session (the tracker ``SparkContext.statusTracker()``
    returns, and the JVM store holding each stage's operation graph), or None."""
    try:
        from pyspark.core.status import StatusTracker

        jsc = spark._jsc
        return StatusTracker(jsc.statusTracker()), jsc.sc().statusStore()
    except Exception:  # noqa: BLE001 - not a classic JVM-backed session: no task counts, only start/end lines
        return None
