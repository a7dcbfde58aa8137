"""The ``autotrace`` command's default output: each finished trace as a call tree on stderr.

One trace prints when its local root span ends, as one write::

    autotrace: trace 4bf92f3577b34da6a3ce929d0e0e4736 (5,002 spans, 48.1 ms)
      main(n=5000) -> 12497500  48.1 ms
        load(path=data.csv) -> [1, 2, 3]  0.9 ms
        step(i=0) -> 0  0.01 ms
        step(i=1) -> 1  0.01 ms
        step(i=2) -> 2  0.01 ms
        parse(text=x)  0.02 ms  !! ValueError: bad value
        ... 4,996 more step: 41.2 ms in all, 0 failed

It must stay readable for 5 spans and for 5,000, and never flood a terminal:
siblings with the same name are shown ``repeat`` times (failures a few times
more) and then summarised in one line; a trace prints at most
``lines_per_trace`` lines and ``max_depth`` levels; consecutive traces with
the same root are summarised after ``repeat``; after ``total_lines`` lines
nothing more is printed but a summary at exit.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from .._log import logger
from ..describe.function import PARAMETER_KEY, RETURN_KEY

_PARAM_PREFIX, _PARAM_SUFFIX = PARAMETER_KEY.split("{}")
_ELLIPSIS = "..."


@dataclass(frozen=True)
class Limits:
    """How much of the traces the call tree shows."""

    value_width: int = 40
    args_width: int = 100
    error_width: int = 160
    repeat: int = 3
    lines_per_trace: int = 100
    max_depth: int = 30
    total_lines: int = 2000
    buffered_spans: int = 100_000


def open_stderr_copy() -> TextIO:
    """A stream on this process's stderr as it is now.

    Output keeps going where the user sent the command's stderr even when the
    program later swaps, captures (pytest) or closes ``sys.stderr``.
    """
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    try:
        return open(os.dup(2), "w", encoding=encoding, errors="backslashreplace", buffering=1)
    except (OSError, ValueError):
        return sys.stderr


def duration_text(nanoseconds: int) -> str:
    ms = nanoseconds / 1e6
    if ms < 0.1:
        return f"{ms:.3f} ms"
    if ms < 1000:
        return f"{ms:.{1 if ms >= 10 else 2}f} ms"
    return f"{ms / 1000:.2f} s"


#: Every C0/C1 control character (ANSI escapes, tabs, newlines) as a visible escape:
#: the tree goes to a terminal, and a value must not drive it or break its lines.
_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7f, 0xa0))}
_CONTROL.update({ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"})


def escape_controls(text: str) -> str:
    return text.translate(_CONTROL)


def value_text(value: Any) -> str:
    """A value as the tree shows it: real strings quoted, renderings (``RenderedText``:
    ``None``, ``[1, 2]``, ``<m.C object>``, ``[REDACTED]``) and numbers as they are."""
    if type(value) is str:
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(value_text(item) for item in value) + "]"
    return str(value)


def _short(value: Any, width: int) -> str:
    text = escape_controls(value if isinstance(value, str) else str(value))
    if len(text) > width:
        text = text[:max(width - len(_ELLIPSIS), 1)] + _ELLIPSIS
    return text


def _failed(span: ReadableSpan) -> bool:
    return span.status.status_code is StatusCode.ERROR


def _duration(span: ReadableSpan) -> int:
    if span.start_time is None or span.end_time is None:
        return 0
    return max(span.end_time - span.start_time, 0)


class TreeRenderer:
    """Turns the spans of one trace into the lines of its call tree."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def span_line(self, span: ReadableSpan) -> str:
        limits = self.limits
        attrs = span.attributes or {}
        text = span.name
        if span.kind is not SpanKind.INTERNAL:
            text = f"[{span.kind.name}] {text}"
        if "code.function.name" in attrs:
            params = [f"{key[len(_PARAM_PREFIX):-len(_PARAM_SUFFIX)]}="
                      f"{_short(value_text(value), limits.value_width)}"
                      for key, value in attrs.items()
                      if key.startswith(_PARAM_PREFIX) and key.endswith(_PARAM_SUFFIX)]
            text += f"({_short(', '.join(params), limits.args_width)})"
            if RETURN_KEY in attrs:
                text += f" -> {_short(value_text(attrs[RETURN_KEY]), limits.value_width)}"
        text += f"  {duration_text(_duration(span))}"
        if _failed(span):
            reason = (span.status.description or attrs.get("error.type") or "error")
            text += f"  !! {_short(reason, limits.error_width)}"
        return escape_controls(text)

    def render(self, spans: Sequence[ReadableSpan]) -> list[str]:
        """The call tree of ``spans`` (one trace), without a header line."""
        limits = self.limits
        by_id = {span.context.span_id: span for span in spans}
        children: dict[int, list[ReadableSpan]] = defaultdict(list)
        tops: list[ReadableSpan] = []
        for span in spans:
            parent = span.parent.span_id if span.parent is not None else None
            if parent is not None and parent in by_id and parent != span.context.span_id:
                children[parent].append(span)
            else:
                tops.append(span)
        for group in children.values():
            group.sort(key=lambda s: s.start_time or 0)
        tops.sort(key=lambda s: s.start_time or 0)
        sizes = self._subtree_sizes(spans, children)

        lines: list[str] = []
        accounted = 0
        # Stack items: (depth, span) for a span line, (depth, text, count) for a summary.
        stack: list[tuple[int, Any, int]] = [(0, s, 0) for s in reversed(tops)]
        while stack and len(lines) < limits.lines_per_trace:
            depth, item, count = stack.pop()
            indent = "  " * (depth + 1)
            if isinstance(item, str):
                lines.append(indent + item)
                accounted += count
                continue
            node: ReadableSpan = item
            lines.append(indent + self.span_line(node))
            accounted += 1
            kids = children.get(node.context.span_id, [])
            if not kids:
                continue
            if depth + 1 > limits.max_depth:
                hidden = sizes[node.context.span_id] - 1
                stack.append((depth + 1, f"{_ELLIPSIS} {hidden:,} deeper spans not shown", hidden))
                continue
            shown, summaries = self._select(kids, sizes)
            stack.extend((depth + 1, text, n) for text, n in reversed(summaries))
            stack.extend((depth + 1, kid, 0) for kid in reversed(shown))
        rest = len(spans) - accounted
        if rest > 0:
            lines.append(f"  {_ELLIPSIS} {rest:,} more spans not shown")
        return lines

    def _select(self, kids: list[ReadableSpan], sizes: dict[int, int]
                ) -> tuple[list[ReadableSpan], list[tuple[str, int]]]:
        """The siblings to show, and a summary line per name for the rest."""
        repeat = self.limits.repeat
        seen: Counter[str] = Counter()
        failures_shown: Counter[str] = Counter()
        shown: list[ReadableSpan] = []
        hidden: dict[str, list[ReadableSpan]] = {}
        for kid in kids:
            name = kid.name
            if seen[name] < repeat:
                seen[name] += 1
                failures_shown[name] += _failed(kid)
                shown.append(kid)
            elif _failed(kid) and failures_shown[name] < repeat:
                failures_shown[name] += 1
                shown.append(kid)
            else:
                hidden.setdefault(name, []).append(kid)
        summaries = []
        for name, group in hidden.items():
            if len(group) == 1:  # a summary line would save nothing
                shown.append(group[0])
                continue
            total = sum(_duration(s) for s in group)
            failed = sum(_failed(s) for s in group)
            spans = sum(sizes[s.context.span_id] for s in group)
            nested = f", {spans - len(group):,} nested spans" if spans > len(group) else ""
            summaries.append((f"{_ELLIPSIS} {len(group):,} more {name}: {duration_text(total)} "
                              f"in all, {failed:,} failed{nested}", spans))
        if len(shown) > len(kids) - sum(len(g) for g in hidden.values()):
            shown.sort(key=lambda s: s.start_time or 0)
        return shown, summaries

    @staticmethod
    def _subtree_sizes(spans: Sequence[ReadableSpan],
                       children: dict[int, list[ReadableSpan]]) -> dict[int, int]:
        sizes: dict[int, int] = {}
        order: list[ReadableSpan] = []
        nested = {kid.context.span_id for group in children.values() for kid in group}
        stack = [s for s in spans if s.context.span_id not in nested]
        while stack:
            span = stack.pop()
            order.append(span)
            stack.extend(children.get(span.context.span_id, ()))
        for span in reversed(order):
            sizes[span.context.span_id] = 1 + sum(
                sizes.get(k.context.span_id, 1) for k in children.get(span.context.span_id, ()))
        for span in spans:
            sizes.setdefault(span.context.span_id, 1)
        return sizes


@dataclass
class _Repeats:
    """Consecutive traces with the same root name beyond ``repeat``."""

    name: str
    count: int = 0
    failed: int = 0
    spans: int = 0
    nanoseconds: int = 0


class CallTreeProcessor(SpanProcessor):
    """Collects each trace's spans and prints its call tree when its local root ends."""

    def __init__(self, stream: TextIO | None = None, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._stream = stream
        self._renderer = TreeRenderer(self.limits)
        self._lock = threading.Lock()
        self._traces: dict[int, list[ReadableSpan]] = {}
        self._buffered = 0
        self._unbuffered: Counter[int] = Counter()
        self._last_root: str | None = None
        self._streak = 0
        self._failed_in_streak = 0
        self._repeats: _Repeats | None = None
        self._lines_left = self.limits.total_lines
        self._over_budget: Counter[str] = Counter()
        self._closed = False
        if hasattr(os, "register_at_fork"):  # a lock held by another thread at fork
            reset = weakref.WeakMethod(self._after_fork)
            os.register_at_fork(after_in_child=lambda: (reset() or (lambda: None))())

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._traces.clear()
        self._buffered = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        try:
            with self._lock:
                if self._closed:
                    return
                trace_id = span.context.trace_id
                if self._buffered < self.limits.buffered_spans:
                    self._traces.setdefault(trace_id, []).append(span)
                    self._buffered += 1
                else:
                    self._unbuffered[trace_id] += 1
                if span.parent is None or span.parent.is_remote:
                    self._finish(trace_id, span)
        except Exception:
            logger.debug("autotrace: call tree output failed", exc_info=True)

    def _finish(self, trace_id: int, root: ReadableSpan) -> None:
        spans = self._traces.pop(trace_id, [])
        self._buffered -= len(spans)
        missing = self._unbuffered.pop(trace_id, 0)
        if not spans:
            return
        repeat = self.limits.repeat
        failed = any(_failed(s) for s in spans)
        if root.name == self._last_root:
            self._streak += 1
        else:
            self._flush_repeats()
            self._last_root, self._streak, self._failed_in_streak = root.name, 1, 0
        if self._streak > repeat and not (failed and self._failed_in_streak < repeat):
            rep = self._repeats = self._repeats or _Repeats(root.name)
            rep.count += 1
            rep.failed += failed
            rep.spans += len(spans) + missing
            rep.nanoseconds += _duration(root)
            return
        self._failed_in_streak += failed
        self._print_trace(spans, root, missing)

    def _print_trace(self, spans: list[ReadableSpan], root: ReadableSpan, missing: int,
                     partial: bool = False) -> None:
        total = len(spans) + missing
        lines = self._renderer.render(spans)
        if missing:
            lines.append(f"  {_ELLIPSIS} {missing:,} more spans not kept (memory limit)")
        state = ", still open or ended after its root" if partial else ""
        header = (f"autotrace: trace {root.context.trace_id:032x} "
                  f"({total:,} span{'s' if total != 1 else ''}, {duration_text(_duration(root))}"
                  f"{state})")
        self._emit([header, *lines], root.name)

    def _flush_repeats(self) -> None:
        rep, self._repeats = self._repeats, None
        if rep is None:
            return
        self._emit([f"autotrace: {_ELLIPSIS} {rep.count:,} more traces of {rep.name}: "
                    f"{rep.spans:,} spans, {duration_text(rep.nanoseconds)} in all, "
                    f"{rep.failed:,} failed"], rep.name)

    def _emit(self, lines: list[str], name: str) -> None:
        if self._lines_left <= 0:
            self._over_budget[name] += 1
            return
        if len(lines) >= self._lines_left:  # the last line is kept for this notice
            self._over_budget[name] += 1
            lines = [f"autotrace: output limit of {self.limits.total_lines:,} lines reached; "
                     "further traces are counted and summarised at exit "
                     "(--exporter otlp keeps them all)"]
            self._lines_left = 0
        else:
            self._lines_left -= len(lines)
        self._write("\n".join(escape_controls(line) for line in lines) + "\n")

    def _write(self, text: str) -> None:
        stream = self._stream or sys.stderr
        try:
            stream.write(text)
            stream.flush()
        except Exception:  # closed or broken stream: stop printing, never fail the program
            self._closed = True

    def shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._flush_repeats()
            leftovers, self._traces = self._traces, {}
            for trace_id, spans in leftovers.items():
                tops = [s for s in spans if s.parent is None or s.parent.is_remote] or spans
                self._print_trace(spans, tops[0], self._unbuffered.pop(trace_id, 0),
                                  partial=True)
            if self._over_budget:
                count = sum(self._over_budget.values())
                common = ", ".join(f"{name} x{n:,}" for name, n in
                                   self._over_budget.most_common(5))
                self._write(f"autotrace: {count:,} traces not shown: {common}\n")
            self._closed = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
