"""The end-to-end properties again through Spark Connect (a smaller budget), in a child process with its own
local Connect server so it does not meet the tests' classic session."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent


def test_end_to_end_properties_hold_under_spark_connect(tmp_path):
    env = {**os.environ, "MM_PROPERTY_REMOTE": "local[2]", "MANYMODELS_HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           str(HERE / "test_spark_properties.py")], capture_output=True, text=True, env=env,
                          cwd=HERE.parents[1], timeout=1500)
    tail = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    assert re.search(r"\b2 passed\b", proc.stdout), tail
