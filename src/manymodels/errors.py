"""TODO docstring."""
from __future__ import annotations

from typing import Iterable

SHOW = 5


class InputError(ValueError):
    """The training input or configuration is not usable; the message says how to fix it."""


def short_list(items: Iterable[object], show: int = SHOW) -> str:
    items = list(items)
    text = ", ".join(repr(i) for i in items[:show])
    return text + (f" and {len(items) - show} more" if len(items) > show else "")
