"""Progress lines from task counts, without Spark."""
import io

import pytest

from manymodels.spark.progress import Progress, StageCount, groups_done, interval_seconds, line


def test_groups_done_is_a_lower_bound_from_the_smallest_tasks():
    assert groups_done(0, [5, 1, 3]) == 0
    assert groups_done(2, [5, 1, 3]) == 4
    assert groups_done(3, [5, 1, 3]) == 9


def test_line_format():
    assert line("training r1", 9, [5, 1, 3], 2, 3.21) == \
        "manymodels: training r1: 2/3 tasks, >= 4 of 9 groups done, 3.2 s"


@pytest.mark.parametrize("value,expected", [(False, None), (0, None), (-1, None), (2.5, 2.5)])
def test_interval(value, expected):
    assert interval_seconds(value) == expected


def test_observe_takes_the_fitting_stage_and_never_goes_back():
    out = io.StringIO()
    p = Progress(None, "t", [2, 2, 2], interval=1e-9, out=out)
    p.observe([StageCount(1, 8, 8), StageCount(2, 3, 1)])  # stage 1 is the input scan (8 tasks)
    p.observe([StageCount(2, 3, 0)])  # a retried attempt restarts its count; progress does not go back
    assert p.best == 1
    assert out.getvalue().splitlines()[-1].startswith("manymodels: t: 1/3 tasks, >= 2 of 6 groups")
