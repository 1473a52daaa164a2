"""The errors every layer raises for bad input, and the helper that lists what was found (a leaf module).

An ``InputError`` message names the group, column or parameter, what was expected, what was found and how to
fix it; the CLI prints it without a traceback."""
from __future__ import annotations

from typing import Iterable

SHOW = 5


class InputError(ValueError):
    """The training input or configuration is not usable; the message says how to fix it."""


class QualityGateError(RuntimeError):
    """A version failed the promotion gate, so its champion alias stayed where it was; the message gives the
    gate's reasons and ``promotion`` (when set) the verdict and the figures it rests on."""

    def __init__(self, message: str, promotion: object = None):
        super().__init__(message)
        self.promotion = promotion


def short_list(items: Iterable[object], show: int = SHOW) -> str:
    items = list(items)
    text = ", ".join(repr(i) for i in items[:show])
    return text + (f" and {len(items) - show} more" if len(items) > show else "")
