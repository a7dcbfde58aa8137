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
import re
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from .._log import logger
from ..describe.function import PARAMETER_KEY, RETURN_KEY
from .stderr import STDERR_ENV, append_to_stderr_file, describe_stderr, open_stderr_copy

__all__ = ["STDERR_ENV", "CallTreeProcessor", "Limits", "append_to_stderr_file",
           "describe_stderr", "open_stderr_copy"]

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


_HAS_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    return text.translate(_CONTROL) if _HAS_CONTROL.search(text) else text


def value_text(value: Any) -> str:
    """A value as the tree shows it: real strings quoted, renderings (``RenderedText``:
    ``None``, ``[1, 2]``, ``<m.C object>``, ``[REDACTED]``) and numbers as they are."""
    if type(value) is str:
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(value_text(item) for item in value) + "]"
    return str(value)


def _short(value: Any, width: int) -> str:
    text = value if isinstance(value, str) else str(value)
    # Escaping never shortens a text, so the first `width` characters shown come from
    # the first `width` + 1 of the value: the rest is not scanned (values are 256 long).
    text = escape_controls(text[:width + 1])
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
        text = escape_controls(span.name)  # the other parts are escaped as they are cut
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
        return text

    def render(self, tops: Sequence[Record]) -> list[str]:
        """The call tree under ``tops`` (one trace's top records), without a header."""
        limits = self.limits
        total = sum(top.size for top in tops)
        lines: list[str] = []
        accounted = 0
        # Stack items: (depth, record, 0) for a span line, (depth, text, count) for a summary.
        stack: list[tuple[int, Any, int]] = [(0, top, 0) for top in reversed(tops)]
        while stack and len(lines) < limits.lines_per_trace:
            depth, item, count = stack.pop()
            indent = "  " * (depth + 1)
            if isinstance(item, str):
                lines.append(indent + item)
                accounted += count
                continue
            node: Record = item
            lines.append(indent + node.line)
            accounted += 1
            if not node.kids and not node.groups:
                continue
            if depth + 1 > limits.max_depth:
                hidden = node.size - 1
                stack.append((depth + 1, f"{_ELLIPSIS} {hidden:,} deeper spans not shown", hidden))
                continue
            kids = sorted(node.kids or (), key=lambda r: r.start)
            shown, summaries = self._select(kids, node.groups or {})
            stack.extend((depth + 1, text, n) for text, n in reversed(summaries))
            stack.extend((depth + 1, kid, 0) for kid in reversed(shown))
        rest = total - accounted
        if rest > 0:
            lines.append(f"  {_ELLIPSIS} {rest:,} more spans not shown")
        return lines

    def _select(self, kids: list[Record], groups: dict[str, Group]
                ) -> tuple[list[Record], list[tuple[str, int]]]:
        """The siblings to show, and a summary line per name for the rest (those hidden
        here and those already folded into ``groups`` while the trace was running)."""
        kept, hidden = select(kids, self.limits.repeat)
        merged: dict[str, Group] = {}
        for name, group in groups.items():
            merged[name] = group.copy()
        for name, recs in hidden.items():
            group = merged.setdefault(name, Group())
            for rec in recs:
                group.add(rec)
        shown = list(kept)
        summaries = []
        for name, group in merged.items():
            if group.count == 1 and name in hidden and hidden[name][0].line:  # saves nothing
                shown.append(hidden[name][0])
                continue
            nested = (f", {group.spans - group.count:,} nested spans"
                      if group.spans > group.count else "")
            summaries.append((f"{_ELLIPSIS} {group.count:,} more {name}: "
                              f"{duration_text(group.nanoseconds)} in all, "
                              f"{group.failed:,} failed{nested}", group.spans))
        if len(shown) > len(kept):
            shown.sort(key=lambda r: r.start)
        return shown, summaries


class Record:
    """What the tree needs of one ended span, ~10x smaller than the ``ReadableSpan``:
    its line, and its children (``kids``, shown) or their counts (``groups``, folded)."""

    __slots__ = ("failed", "groups", "kids", "line", "name", "nanoseconds", "records", "size",
                 "start")

    def __init__(self, line: str, name: str, start: int, nanoseconds: int, failed: bool,
                 kids: list[Record] | None, groups: dict[str, Group] | None) -> None:
        self.line = line
        self.name = name
        self.start = start
        self.nanoseconds = nanoseconds
        self.failed = failed
        self.kids = kids
        self.groups = groups
        #: Spans in this subtree, folded ones included; records kept in it.
        self.size: int = 1 + sum(k.size for k in kids or ()) + sum(
            g.spans for g in (groups or {}).values())
        self.records: int = 1 + sum(k.records for k in kids or ())


class Group:
    """Sibling subtrees of one name folded into counts."""

    __slots__ = ("count", "failed", "nanoseconds", "spans")

    def __init__(self) -> None:
        self.count = self.failed = self.nanoseconds = self.spans = 0

    def add(self, rec: Record) -> None:
        self.count += 1
        self.failed += rec.failed
        self.nanoseconds += rec.nanoseconds
        self.spans += rec.size

    def copy(self) -> Group:
        other = Group()
        other.count, other.failed = self.count, self.failed
        other.nanoseconds, other.spans = self.nanoseconds, self.spans
        return other


def select(kids: list[Record], repeat: int) -> tuple[list[Record], dict[str, list[Record]]]:
    """The siblings shown in the tree (the first ``repeat`` of each name, and up to
    ``repeat`` more failures), and the others by name."""
    seen: Counter[str] = Counter()
    failures_shown: Counter[str] = Counter()
    shown: list[Record] = []
    hidden: dict[str, list[Record]] = {}
    for kid in kids:
        name = kid.name
        if not kid.line:  # not rendered: it was past `repeat` when it ended
            hidden.setdefault(name, []).append(kid)
        elif seen[name] < repeat:
            seen[name] += 1
            failures_shown[name] += kid.failed
            shown.append(kid)
        elif kid.failed and failures_shown[name] < repeat:
            failures_shown[name] += 1
            shown.append(kid)
        else:
            hidden.setdefault(name, []).append(kid)
    return shown, hidden


def _fold(recs: list[Record], groups: dict[str, Group], repeat: int) -> tuple[list[Record], int]:
    """Keep the records the tree shows (recursively), fold the others into ``groups``;
    the kept records and how many records were freed."""
    kept, hidden = select(recs, repeat)
    freed = 0
    for name, others in hidden.items():
        group = groups.setdefault(name, Group())
        for rec in others:
            group.add(rec)
            freed += rec.records
    for rec in kept:
        if rec.kids:
            before = rec.records
            rec.groups = rec.groups or {}
            rec.kids, _ = _fold(rec.kids, rec.groups, repeat)
            rec.records = 1 + sum(k.records for k in rec.kids)
            freed += before - rec.records
    return kept, freed


def _fold_all_kids(rec: Record) -> int:
    """Fold all of ``rec``'s children into counts; the records freed."""
    if not rec.kids:
        return 0
    groups = rec.groups = rec.groups or {}
    for kid in rec.kids:
        groups.setdefault(kid.name, Group()).add(kid)
    freed = rec.records - 1
    rec.kids, rec.records = None, 1
    return freed


class _Trace:
    """The ended spans of one trace whose root has not ended yet."""

    __slots__ = ("failed", "folded", "seen", "waiting")

    def __init__(self) -> None:
        #: parent span id -> how many children of each name have ended (open parents only)
        self.seen: dict[int, dict[str, int]] = {}
        #: parent span id -> records of its ended children (the parent is still open)
        self.waiting: dict[int, list[Record]] = {}
        #: parent span id -> its ended children folded into counts, by name
        self.folded: dict[int, dict[str, Group]] = {}
        self.failed = False

    def tops(self) -> list[Record]:
        """What is left when the root has ended (or never did), as top-level records."""
        tops = [rec for recs in self.waiting.values() for rec in recs if rec.line]
        unnamed: dict[str, Group] = {}
        for recs in self.waiting.values():
            for rec in recs:
                if not rec.line:
                    unnamed.setdefault(rec.name, Group()).add(rec)
        for groups in [*self.folded.values(), unnamed]:
            for name, group in groups.items():
                tops.append(_summary_record(name, group))
        tops.sort(key=lambda r: r.start)
        return tops


def _summary_record(name: str, group: Group) -> Record:
    """A folded group without a parent to hang on, as a record of its own."""
    nested = f", {group.spans - group.count:,} nested spans" if group.spans > group.count else ""
    rec = Record(f"{_ELLIPSIS} {group.count:,} {name}: {duration_text(group.nanoseconds)} in "
                 f"all, {group.failed:,} failed{nested}", name, 0, group.nanoseconds,
                 bool(group.failed), None, None)
    rec.size = group.spans
    return rec


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
        self._traces: dict[int, _Trace] = {}
        self._buffered = 0  # records kept, all traces
        self._next_compact = self.limits.buffered_spans
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
                self._add(span)
        except Exception:
            logger.debug("autotrace: call tree output failed", exc_info=True)

    def _add(self, span: ReadableSpan) -> None:
        """Keep a compact record of ``span``, or fold it into its parent's counts once
        ``buffered_spans`` records are kept: ancestors end after their children, so they
        always find their children's records or counts waiting for them."""
        trace_id = span.context.trace_id
        span_id = span.context.span_id
        trace = self._traces.get(trace_id)
        if trace is None:
            trace = self._traces[trace_id] = _Trace()
        kids = trace.waiting.pop(span_id, None)
        groups = trace.folded.pop(span_id, None)
        trace.seen.pop(span_id, None)
        failed = _failed(span)
        trace.failed |= failed
        name = span.name
        root = span.parent is None or span.parent.is_remote
        parent = 0 if span.parent is None else span.parent.span_id
        # Only a span the tree may show gets its line (the first `repeat` + 1 of a name under
        # one parent, and failures): rendering costs more than the rest of a record.
        seen = trace.seen.get(parent)
        if seen is None:
            seen = trace.seen[parent] = {}
        shown = seen.get(name, 0)
        if not failed:  # failures always get their line; `select` counts them apart
            seen[name] = shown + 1
        line = self._renderer.span_line(span) if root or failed or shown <= self.limits.repeat \
            else ""
        rec = Record(line, name, span.start_time or 0, _duration(span), failed, kids, groups)
        if root:
            self._buffered -= rec.records - 1
            self._finish(trace_id, rec)
            return
        self._buffered += 1
        budget = self.limits.buffered_spans
        if self._buffered > self._next_compact:
            self._compact()
            # Compact again only after a quarter of the budget more: never once per span.
            self._next_compact = max(budget, self._buffered + budget // 4)
        if self._buffered > budget + budget // 4:  # nothing left to fold: fold this one
            self._buffered -= rec.records
            trace.folded.setdefault(parent, {}).setdefault(rec.name, Group()).add(rec)
            return
        trace.waiting.setdefault(parent, []).append(rec)

    def _compact(self) -> None:
        """Fold every subtree the tree would not show anyway (siblings past ``repeat``)."""
        repeat = self.limits.repeat
        freed = 0
        for trace in self._traces.values():
            for parent, recs in list(trace.waiting.items()):
                groups = trace.folded.setdefault(parent, {})
                kept, n = _fold(recs, groups, repeat)
                trace.waiting[parent] = kept
                freed += n
                if not groups:
                    del trace.folded[parent]
        self._buffered -= freed
        if self._buffered > self.limits.buffered_spans // 2:  # still full: keep leaves only
            for trace in self._traces.values():
                for recs in trace.waiting.values():
                    for rec in recs:
                        self._buffered -= _fold_all_kids(rec)

    def _finish(self, trace_id: int, root: Record) -> None:
        trace = self._traces.pop(trace_id, None)
        extra = trace.tops() if trace is not None else []
        if trace is not None:
            self._buffered -= sum(rec.records for recs in trace.waiting.values() for rec in recs)
        if self._buffered <= self.limits.buffered_spans:
            self._next_compact = self.limits.buffered_spans
        failed = root.failed or (trace is not None and trace.failed)
        repeat = self.limits.repeat
        if root.name == self._last_root:
            self._streak += 1
        else:
            self._flush_repeats()
            self._last_root, self._streak, self._failed_in_streak = root.name, 1, 0
        if self._streak > repeat and not (failed and self._failed_in_streak < repeat):
            rep = self._repeats = self._repeats or _Repeats(root.name)
            rep.count += 1
            rep.failed += failed
            rep.spans += root.size + sum(rec.size for rec in extra)
            rep.nanoseconds += root.nanoseconds
            return
        self._failed_in_streak += failed
        self._print_trace(trace_id, [root, *extra], root)

    def _print_trace(self, trace_id: int, tops: list[Record], root: Record,
                     partial: bool = False) -> None:
        total = sum(top.size for top in tops)
        lines = self._renderer.render(tops)
        state = ", still open or ended after its root" if partial else ""
        header = (f"autotrace: trace {trace_id:032x} "
                  f"({total:,} span{'s' if total != 1 else ''}, {duration_text(root.nanoseconds)}"
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
            for trace_id, trace in leftovers.items():
                tops = trace.tops()
                if tops:
                    self._print_trace(trace_id, tops, tops[0], partial=True)
            if self._over_budget:
                count = sum(self._over_budget.values())
                common = ", ".join(f"{name} x{n:,}" for name, n in
                                   self._over_budget.most_common(5))
                self._write(f"autotrace: {count:,} traces not shown: {common}\n")
            self._closed = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
