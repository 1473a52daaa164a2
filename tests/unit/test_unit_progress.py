"""Progress from task counts and the plan, without Spark: the estimate, the lines on the "manymodels" logger, the
bar's switch."""
import logging

import pandas as pd
import pytest

from manymodels.settings import PROGRESS_BAR_ENV
from manymodels.spark import progress as P
from manymodels.spark.progress import (
    Estimate,
    Progress,
    StageCount,
    TaskPlan,
    estimate_groups,
    groups_done,
    interval_seconds,
    items_per_task,
    line,
)


def test_groups_done_is_a_lower_bound_from_the_smallest_tasks():
    assert groups_done(0, [5, 1, 3]) == 0
    assert groups_done(2, [5, 1, 3]) == 4
    assert groups_done(3, [5, 1, 3]) == 9


def test_line_format():
    assert line("training r1", 9, [5, 1, 3], 2, 3.21) == \
        "manymodels: training r1: 2/3 tasks, >= 4 of 9 groups done, 3.2 s"
    assert line("search s", 9, [5, 1, 3], 2, 3.21, estimate=6.4, eta=2.2, unit="fit") == \
        "manymodels: search s: 2/3 tasks, >= 4 of 9 fits done, 3.2 s, about 6 estimated, ETA 2 s"


@pytest.mark.parametrize("value,expected", [(False, None), (0, None), (-1, None), (2.5, 2.5)])
def test_interval(value, expected):
    assert interval_seconds(value) == expected


def test_the_estimate_moves_before_the_first_task_ends_and_never_overstates():
    groups, rows = [40, 40], [4000, 4000]  # two planned tasks (one per core), both running from the start
    before = [estimate_groups(groups, rows, done=0, active=2, elapsed=s) for s in (0, 1, 10, 60, 600)]
    assert before[0] == 0 and all(a < b for a, b in zip(before, before[1:]))  # moves with time, no task ended
    assert before[-1] < 40  # at most half of the running tasks' groups before any rate is measured
    # one task ended after 10 s on 2 slots: 4,000 rows per 20 slot-seconds; 5 s later the other is ~3/4 through
    after = estimate_groups(groups, rows, done=1, active=1, elapsed=15, seconds_per_row=10 * 2 / 4000, slots=2)
    assert 40 < after < 80 and after == pytest.approx(40 + 40 * 0.5)  # (15 s x 2 slots / 0.005) - 4,000 rows
    capped = estimate_groups(groups, rows, done=1, active=1, elapsed=1e6, seconds_per_row=0.005, slots=2)
    assert capped == pytest.approx(40 + 40 * P.RUNNING_CAP)  # a running task is never counted as done
    assert estimate_groups(groups, rows, done=2, active=0, elapsed=20) == 80


def test_planned_rows_weigh_the_running_tasks():
    """A task of many small groups and one of a single big group: the credit follows the planned rows left."""
    plan = TaskPlan([99, 1], rows=[1000, 9000])
    est = Estimate(plan)
    assert est.update(0, 2, now=100.0) == 0  # the stage just started
    assert 0 < est.update(0, 2, now=110.0) < 50
    # one task ended after 20 s on 2 slots; taken as the 1-group task (the lower bound), so 9,000 rows per 40 s
    assert est.update(1, 1, now=120.0) == pytest.approx(1)
    assert est.seconds_per_row == pytest.approx(20 * 2 / 9000)
    # 5 s later the slots have processed 2,250 rows more: the 1,000-row task is nearly done (capped)
    assert est.update(1, 1, now=125.0) == pytest.approx(1 + P.RUNNING_CAP * 1000 * 99 / 1000)


def test_task_plan_of_a_packing_counts_groups_and_rows_per_partition():
    from manymodels.core.planning import BIN_COL, partition_labels

    labels = partition_labels(3)
    assignment = pd.DataFrame({"k": [1, 2, 3, 4], "count": [10, 20, 30, 40],
                               BIN_COL: [labels[0], labels[0], labels[2], labels[2]]})

    class Packing:  # what spark.packing.Packing holds
        n_parts = 3

    Packing.assignment = assignment
    plan = P.task_plan(Packing)
    assert list(plan) == [2, 0, 2] and plan.rows == [30, 0, 70]
    fits = items_per_task([0, 0, 1], 2, costs=[1.0, 2.0, 5.0])
    assert list(fits) == [2, 1] and fits.rows == [3.0, 5.0]


def test_observe_takes_the_work_stage_and_never_goes_back(caplog):
    p = Progress(None, "t", [2, 2, 2], interval=1e-9, bar=False)
    with caplog.at_level(logging.INFO, logger="manymodels"):
        p.observe([StageCount(1, 8, 8), StageCount(2, 3, 1, 2)])  # stage 1 is the input scan (8 tasks)
        p.observe([StageCount(2, 3, 0, 3)])  # a retried attempt restarts its count; progress does not go back
    assert p.best == 1 and p.value >= 2
    last = caplog.records[-1]
    assert last.name == "manymodels.progress" and last.getMessage().startswith("manymodels: t: 1/3 tasks, >= 2 of 6")


def test_a_stage_known_to_run_the_udf_wins_over_one_with_the_same_task_count():
    p = Progress(None, "t", [1, 1], interval=1e-9, bar=False)
    p.observe([StageCount(3, 2, 2, 0, work=False), StageCount(4, 2, 0, 2, work=True)])
    assert p.best == 0  # stage 3 (a scan of two files) finished: not counted
    p.observe([StageCount(4, 2, 1, 1, work=True), StageCount(5, 2, 2, 0, work=False)])
    assert p.best == 1


class Recorder:
    """A stand-in for tqdm: records what the bar was given."""

    made = []

    def __init__(self, total=None, **kwargs):
        self.total, self.n, self.kwargs, self.closed, self.postfix = total, 0, kwargs, False, ""
        Recorder.made.append(self)

    def update(self, n):
        self.n += n

    def refresh(self):
        pass

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text

    def close(self):
        self.closed = True


def test_the_bar_goes_to_the_total_and_logs_start_and_end(monkeypatch, caplog):
    Recorder.made = []
    monkeypatch.setattr(P, "bar_class", lambda: Recorder)
    with caplog.at_level(logging.INFO, logger="manymodels"):
        with Progress(None, "training r", TaskPlan([3, 2], [30, 20]), interval=5, bar=True) as p:
            p.observe([StageCount(7, 2, 0, 2)])
            p.observe([StageCount(7, 2, 1, 1)])
            assert 0 < Recorder.made[0].n < 5
    bar = Recorder.made[0]
    assert bar.total == 5 and bar.n == 5 and bar.closed and bar.kwargs["unit"] == "group"
    messages = [r.getMessage() for r in caplog.records if r.name == "manymodels.progress"]
    assert messages[0] == "manymodels: training r: 5 groups in 2 tasks"
    assert messages[-1].startswith("manymodels: training r: 2/2 tasks, >= 5 of 5 groups done")
    assert len(messages) == 2  # with a bar: no periodic lines


def test_without_a_plan_the_bar_counts_tasks_of_the_work_stage(monkeypatch):
    Recorder.made = []
    monkeypatch.setattr(P, "bar_class", lambda: Recorder)
    with Progress(None, "scoring", None, interval=5, bar=True) as p:
        p.observe([StageCount(2, 4, 4, 0, work=False), StageCount(3, 8, 3, 2, work=True)])
        assert (Recorder.made[0].total, Recorder.made[0].n) == (8, 3)
    assert (p.best, Recorder.made[0].n) == (8, 8)


def test_a_failed_job_closes_the_bar_without_an_end_line(monkeypatch, caplog):
    Recorder.made = []
    monkeypatch.setattr(P, "bar_class", lambda: Recorder)
    with caplog.at_level(logging.INFO, logger="manymodels"), pytest.raises(RuntimeError):
        with Progress(None, "t", [1, 1], interval=5, bar=True):
            raise RuntimeError("boom")
    assert Recorder.made[0].closed and Recorder.made[0].n == 0
    assert [r.getMessage() for r in caplog.records if r.name == "manymodels.progress"] == \
        ["manymodels: t: 2 groups in 2 tasks"]


@pytest.mark.parametrize("value,tty,expected", [("0", True, False), ("off", True, False), ("1", False, True),
                                                ("", True, True), ("", False, False)])
def test_manymodels_progress_switches_the_bar(monkeypatch, value, tty, expected):
    monkeypatch.setenv(PROGRESS_BAR_ENV, value)
    monkeypatch.setattr(P, "in_notebook", lambda: False)
    monkeypatch.setattr(P.sys.stderr, "isatty", lambda: tty, raising=False)
    assert P.bar_wanted() is expected
    assert Progress(None, "t", [1], interval=5).show_bar is expected
    assert Progress(None, "t", [1], interval=False).show_bar is False  # progress=False: no bar either


def test_a_bar_that_cannot_be_made_leaves_log_lines(monkeypatch, caplog):
    def broken(**kwargs):
        raise ImportError("IProgress not found")

    monkeypatch.setattr(P, "bar_class", lambda: broken)
    with caplog.at_level(logging.INFO, logger="manymodels"):
        with Progress(None, "t", [1], interval=1e-9, bar=True) as p:
            assert p.bar is None
            p.observe([StageCount(1, 1, 0, 1)])
    assert len([r for r in caplog.records if r.name == "manymodels.progress"]) == 3
