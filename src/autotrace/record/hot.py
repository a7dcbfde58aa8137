"""The hot-function budget (``suppress_hot``): small functions called very often stop
making spans once they have shown they are small.

Each function's span durations are collected in windows of ``hot_calls``; when a
window is full and its median is under ``hot_duration``, the function is *hot*:
its later calls make no span (they are still counted by the metrics and the
profile, and on the enclosing span: ``SUPPRESSED_FUNCTIONS_KEY`` and
``SUPPRESSED_COUNTS_KEY``, parallel arrays of function names and counts). A hot
call that raises still becomes a span (without its children). A window whose
median is not under the threshold is discarded and a new one starts.
"""

from __future__ import annotations

import threading
from typing import Any

from ..config import Config

#: On a span: the traced functions whose calls inside it were suppressed as hot ...
SUPPRESSED_FUNCTIONS_KEY = "autotrace.suppressed_calls.function"
#: ... and how many calls of each (same order).
SUPPRESSED_COUNTS_KEY = "autotrace.suppressed_calls.count"


class HotBudget:
    """Which functions are hot (see module docstring)."""

    def __init__(self, config: Config) -> None:
        self.window = config.hot_calls
        self.limit_ns = round(config.hot_duration * 1e9)
        #: The hot functions (``FunctionInfo``); read on every call start.
        self.hot: set[Any] = set()
        self._windows: dict[Any, list[int]] = {}
        self._lock = threading.Lock()

    def observe(self, info: Any, duration_ns: int) -> None:
        """``info`` made a span that lasted ``duration_ns``."""
        durations = self._windows.get(info)
        if durations is None:
            with self._lock:
                durations = self._windows.setdefault(info, [])
        durations.append(duration_ns)
        if len(durations) >= self.window:
            with self._lock:
                if len(durations) < self.window:  # another thread decided meanwhile
                    return
                ordered = sorted(durations)
                durations.clear()
                if ordered[len(ordered) // 2] < self.limit_ns:
                    self.hot.add(info)
                    self._windows.pop(info, None)


def suppressed_attributes(counts: dict[str, int]) -> dict[str, Any]:
    names = sorted(counts)
    return {SUPPRESSED_FUNCTIONS_KEY: tuple(names),
            SUPPRESSED_COUNTS_KEY: tuple(counts[name] for name in names)}
