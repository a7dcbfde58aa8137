"""The profile at exit: the traced functions by total time, from the per-function aggregates.

Like ``python -m cProfile -s cumtime``, but for the selected functions only,
with module-qualified names. ``own`` is a call's total minus the totals of its
traced children that were current in it (spans, pending calls, or every call
with spans off); calls that made no span because of ``require_parent``,
``max_depth`` or ``suppress_hot`` are counted and timed, and their time stays
in their enclosing call's own time. Generators and coroutines: ``total`` (and
the histogram) is from the first start to the end, suspensions included;
``own`` counts only the time the body ran (between resume and suspension),
minus the time its traced children ran, which is what it adds to its caller's
children; so own times add up to the wall time spent in traced code. The
wrapt backend steps a traced coroutine through its suspensions while
the profile is on (a plain ``await`` would hide them), so this holds on
both backends.
"""

from __future__ import annotations

import sys
from typing import TextIO

from .metrics import Aggregates, FunctionStats

DEFAULT_TOP = 20


def _seconds(ns: float) -> str:
    seconds = ns / 1e9
    if seconds >= 1:
        return f"{seconds:.3f}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f}ms"
    return f"{seconds * 1e6:.1f}us"


def rows(aggregates: Aggregates) -> list[FunctionStats]:
    """The functions with calls, by total time (longest first)."""
    found = [stats for stats in list(aggregates.by_info.values()) if stats.calls]
    found.sort(key=lambda stats: (-stats.total_ns, stats.name))
    return found


def render(aggregates: Aggregates, top: int = DEFAULT_TOP) -> str:
    found = rows(aggregates)
    if not found:
        return "autotrace profile: no traced calls\n"
    header = ("calls", "total", "own", "mean", "max", "failures", "function")
    table = [header]
    for stats in found[:top]:
        table.append((str(stats.calls), _seconds(stats.total_ns), _seconds(stats.own_ns),
                      _seconds(stats.total_ns / stats.calls), _seconds(stats.max_ns),
                      str(stats.failures), stats.name))
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    shown = min(top, len(found))
    lines = [f"autotrace profile: {len(found)} traced functions by total time"
             + (f" (top {shown})" if shown < len(found) else "")]
    for row in table:
        cells = [row[i].rjust(widths[i]) for i in range(len(widths))]
        lines.append("  ".join(cells) + "  " + row[-1])
    return "\n".join(lines) + "\n"


def print_profile(aggregates: Aggregates, stream: TextIO | None = None) -> None:
    """Write the profile (at exit); never raises."""
    try:
        out = stream or sys.stderr
        out.write(render(aggregates))
        out.flush()
    except Exception:
        pass
