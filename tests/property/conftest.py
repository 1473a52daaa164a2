"""The property tier: ``hypothesis`` generates keys, column names and values a user might send.

Profiles (``MM_HYPOTHESIS_PROFILE``): ``ci`` (default; derandomized, so every run tries the same examples and a
failure reproduces) and ``deep`` (``make test-deep``: ten times the examples, random). Budgets are per test:
``panels.examples(n)`` gives n under ``ci`` and 10 n under ``deep``. A failing example is printed as the arguments'
``repr``: ``Panel(...)`` pastes into a regression test after ``from math import inf, nan``,
``from decimal import Decimal`` and ``import datetime``.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("MM_HYPOTHESIS_PROFILE", "ci")
SCALE = 10 if PROFILE == "deep" else 1
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture, HealthCheck.large_base_example])
settings.register_profile("deep", derandomize=False, deadline=None, print_blob=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture, HealthCheck.large_base_example])
settings.load_profile(PROFILE)
