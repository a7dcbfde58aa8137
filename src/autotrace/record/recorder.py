"""The recorder: every traced call starts and finishes here, whichever backend saw it.

A call is a ``Call``; ``finish`` is the one way it ends (returned, raised,
or abandoned by a generator that vanished without an event), so the guards
live once: the re-entry guard, fork safety and deferred ends.

Two ways of recording, chosen at ``install()``:

* **eager** (no ``min_duration``): the span starts with the call, exactly as
  ``tracer.start_as_current_span`` would place it (same parent, current inside
  the body), with its static attributes; arguments, return value and the depth
  count go in one ``set_attributes`` just before ``end`` (the cheapest pattern
  the SDK allows; a sampler or ``on_start`` processor sees the static ones).
* **pending** (``min_duration`` set): nothing is started. The call records its
  start time and keeps references to its arguments; a ``PendingSpan`` stands in
  the context. When the call ends it is kept if it lasted ``min_duration`` or
  more, raised (``keep_errors``), or was made real meanwhile (a kept call inside
  it, or any span started inside it, asked for its parent): kept calls are
  emitted with their real start and end times, so the first slow call is
  complete. A kept call always lasts at least as long as its kept children, so
  ancestors are made real before their children and no span is re-parented.

``require_parent`` and ``max_depth`` are decided when the call starts.

Re-entry: while autotrace is at work on a thread (starting a span, rendering a
value, ending a span, which may export synchronously) calls made on that
thread are not traced, so a traced ``__repr__``, span processor, exporter or
signal handler cannot recurse or deadlock. OpenTelemetry's
suppress-instrumentation context key, set by the SDK's processors while they
export, is honoured the same way.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from time import time_ns
from types import FrameType
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Tracer

from .._log import log_once
from ..config import Config
from ..describe.function import RETURN_KEY, Formatter, FunctionInfo
from .spans import DEPTH_LIMITED_KEY, PendingSpan, TracerSource, record_failure

#: How a call ended (``Recorder.finish``).
RETURNED, RAISED, ABANDONED = 0, 1, 2

_INTERNAL = SpanKind.INTERNAL
_get_current = context_api.get_current
_attach = context_api.attach
_detach = context_api.detach
_set_span_in_context = trace.set_span_in_context
_get_current_span = trace.get_current_span
_NO_DEPTH_LIMIT = 1 << 62

#: The innermost traced call running in this context (thread, task).
_current: ContextVar[Call | None] = ContextVar("autotrace_current_call", default=None)

#: Spans whose end was requested where ending them could re-enter an exporter: the
#: garbage collector finalising an abandoned traced generator while this thread is in
#: autotrace's own work or an export (an exporter holding a lock would deadlock). They
#: end, with the time they were due, as soon as a span ends outside such work.
_deferred: deque[tuple[Span, int]] = deque()


class _Local(threading.local):
    busy = False


_local = _Local()

# A span started before a fork must be ended by the process that started it
# only; the child sees a different generation and leaves it alone.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Call:
    """One traced call, from its start to its finish (generators: across suspensions)."""

    __slots__ = ("args", "attrs", "closed", "depth", "escaped", "generation", "hidden",
                 "info", "instance", "kwargs", "parent", "parent_ctx", "run_ctx", "saved",
                 "span", "start_ns", "token", "under_pending", "values")

    def __init__(self, info: FunctionInfo, parent: Call | None, depth: int) -> None:
        self.info = info
        self.parent = parent  # the enclosing traced call when this one started
        self.depth = depth
        self.saved = parent  # what ``_current`` goes back to at suspend/finish
        self.generation = _fork_generation
        self.span: Span | None = None
        self.token: Any = None  # of the context attached while the body runs
        self.run_ctx: Any = None  # generators: the context to attach at each resume
        self.parent_ctx: Any = None
        self.under_pending = False  # started while a PendingSpan was current
        self.start_ns = 0
        self.closed = False
        self.escaped: BaseException | None = None  # what a kept child raised
        self.hidden = 0  # traced calls below the depth limit
        # Where the arguments come from, rendered only if a span records them:
        self.instance: Any = None
        self.args: tuple[Any, ...] = ()
        self.kwargs: Mapping[str, Any] | None = None
        self.values: list[Any] | None = None  # read from a frame
        self.attrs: dict[str, Any] | None = None  # rendered at start


def _exporting() -> bool:
    """Whether this thread is inside an SDK processor's export (of any span)."""
    return bool(_get_current().get(_SUPPRESS_INSTRUMENTATION_KEY))


def _drain_deferred() -> None:
    """End the deferred spans; called outside autotrace's work, it marks itself busy
    so that finalisers running meanwhile defer again (and are drained here too)."""
    local = _local
    local.busy = True
    try:
        while True:
            try:
                span, end_time = _deferred.popleft()
            except IndexError:
                return
            try:
                span.end(end_time)
            except Exception:
                log_once("close", "autotrace: could not end a deferred span")
    finally:
        local.busy = False


class Recorder:
    """What is kept of the traced calls of one installation (see module docstring)."""

    def __init__(self, config: Config, formatter: Formatter) -> None:
        self.formatter = formatter
        self.capture_args = config.capture_args
        self.capture_return = config.capture_return
        self.max_length = config.max_value_length
        self.min_ns = 0
        self.keep_errors = True
        self.require_parent = False
        self.max_depth = _NO_DEPTH_LIMIT
        self.pending = False
        self.active = True
        self._source = TracerSource(config.tracer_provider, self._global_provider_set)
        self._on_ready: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.tracer: Tracer | None = None
        self.tracer = self._source.resolve()

    # -- set-up -----------------------------------------------------------------------

    @property
    def dormant(self) -> bool:
        """Nothing to record (no provider yet, or a no-op one): calls pass through."""
        return self._source.dormant

    def _global_provider_set(self) -> None:
        if self.active:
            tracer = self._source.resolve()
            if tracer is not None:
                self.tracer = tracer
                for callback in self._on_ready:
                    callback()

    def on_ready(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when a dormant installation gets a tracer."""
        self._on_ready.append(callback)

    def describe_function(self, func: Callable[..., Any], module: str, qualname: str,
                          implicit_first: bool) -> FunctionInfo:
        return self.formatter.describe_function(func, module, qualname, implicit_first)

    def describe_code(self, code: Any, module: str, qualname: str) -> FunctionInfo:
        return self.formatter.describe_code(code, module, qualname)

    # -- a call starts (hot path) -----------------------------------------------------

    def start(self, info: FunctionInfo, instance: Any, args: tuple[Any, ...],
              kwargs: Mapping[str, Any], suspends: bool = False) -> Call | None:
        """A call with these arguments starts; ``None``: let it run untraced.

        ``suspends``: a generator or coroutine; its arguments are rendered now, so
        that the recorder does not keep them alive while the body may drop them.
        """
        call = self._begin(info)
        if call is None:
            return None
        if suspends:
            call.attrs = self._render_now(info, instance, args, kwargs)
        else:
            call.instance, call.args, call.kwargs = instance, args, kwargs
        return self._open(call, suspends)

    def start_frame(self, info: FunctionInfo, frame: FrameType,
                    suspends: bool) -> Call | None:
        """A call whose frame has just started (arguments are its first locals)."""
        call = self._begin(info)
        if call is None:
            return None
        if self.capture_args:
            try:
                values = self.formatter.frame_values(info, frame)
            except Exception:
                log_once("arguments", "autotrace: could not read the arguments of %s",
                         info.span_name)
                values = None
            if suspends and values is not None:
                call.attrs = self._render_values(info, values)
            else:
                call.values = values
        return self._open(call, suspends)

    def _begin(self, info: FunctionInfo) -> Call | None:
        """The checks made before anything is recorded; a new ``Call`` or None."""
        if not self.active or _local.busy:
            return None
        if self.require_parent:  # first: the cheapest way out for calls outside requests
            current = _get_current_span()
            if current is INVALID_SPAN or (type(current) is not PendingSpan
                                           and not current.get_span_context().is_valid):
                return None
        if self.tracer is None:
            if self.dormant:
                return None
            tracer = self._source.resolve()
            if tracer is None:
                return None
            self.tracer = tracer
        parent = _current.get()
        if parent is None:
            depth = 1
        else:
            depth = parent.depth + 1
            if depth > self.max_depth:
                parent.hidden += 1
                return None
        return Call(info, parent, depth)

    def _open(self, call: Call, suspends: bool) -> Call | None:
        ctx = _get_current()
        if ctx.get(_SUPPRESS_INSTRUMENTATION_KEY):
            return None
        if self.pending:
            call.start_ns = time_ns()
            call.parent_ctx = ctx
            if type(_get_current_span(ctx)) is PendingSpan:
                call.under_pending = True
                if suspends:  # re-attached at each resume, maybe in another context
                    call.run_ctx = ctx
                    call.token = _attach(ctx)
            else:
                run_ctx = _set_span_in_context(PendingSpan(self, call), ctx)
                if suspends:
                    call.run_ctx = run_ctx
                call.token = _attach(run_ctx)
            _current.set(call)
            return call
        local = _local
        local.busy = True
        try:
            info = call.info
            span = self.tracer.start_span(  # type: ignore[union-attr]
                info.span_name, ctx, _INTERNAL, info.static_attributes)
            run_ctx = _set_span_in_context(span, ctx)
            call.token = _attach(run_ctx)
        except Exception:
            log_once("open", "autotrace: could not start a span for %s; the call runs "
                     "untraced", call.info.span_name)
            return None
        finally:
            local.busy = False
        call.span = span
        if suspends:
            call.run_ctx = run_ctx
        _current.set(call)
        return call

    # -- generators and coroutines ------------------------------------------------------

    def suspend(self, call: Call) -> None:
        """The body yielded or awaited: the call stays open but is no longer current."""
        token = call.token
        if token is not None:
            call.token = None
            _detach(token)
        _current.set(call.saved)

    def resume(self, call: Call) -> None:
        """The body runs again, maybe in another context: make the call current there."""
        call.saved = _current.get()
        _current.set(call)
        if call.run_ctx is not None:
            call.token = _attach(call.run_ctx)

    # -- a call ends (hot path) -------------------------------------------------------

    def finish(self, call: Call, outcome: int, value: Any) -> None:
        """The call ended: ``RETURNED`` ``value``, ``RAISED`` ``value``, or
        ``ABANDONED`` (a suspended generator vanished; called from a finaliser)."""
        if outcome != ABANDONED:
            token = call.token
            if token is not None:
                call.token = None
                _detach(token)
            _current.set(call.saved)
        if call.generation != _fork_generation:
            return
        span = call.span
        end_ns = 0
        if span is None:  # pending: keep it?
            end_ns = time_ns()
            if end_ns - call.start_ns < self.min_ns and not (
                    outcome == RAISED and self.keep_errors and isinstance(value, Exception)):
                call.closed = True
                call.instance = call.args = call.kwargs = call.values = None  # type: ignore[assignment]
                return
            span = self._materialize(call)
            if span is None:
                return
        call.closed = True
        self._end(call, span, outcome, value, end_ns)

    def _end(self, call: Call, span: Span, outcome: int, value: Any, end_ns: int) -> None:
        local = _local
        busy = local.busy
        local.busy = True
        try:
            try:
                if span.is_recording():
                    attrs = self._arguments(call)
                    if outcome == RETURNED and self.capture_return:
                        attrs[RETURN_KEY] = self.formatter.return_value(call.info, value)
                    if call.hidden:
                        attrs[DEPTH_LIMITED_KEY] = call.hidden
                    if attrs:
                        span.set_attributes(attrs)
                    if outcome == RAISED:
                        record_failure(span, value, call.escaped is not value, self.max_length)
            finally:  # whatever recording did: a span that started must end
                # A finaliser (abandoned generator, GeneratorExit) may run anywhere,
                # even inside an export: ending there could re-enter the exporter.
                if busy or ((outcome == ABANDONED or (outcome == RAISED
                                                     and type(value) is GeneratorExit)
                            ) and _exporting()):
                    _deferred.append((span, end_ns or time_ns()))
                elif end_ns:
                    span.end(end_ns)
                else:
                    span.end()
        except Exception:
            log_once("close", "autotrace: could not end the span of %s", call.info.span_name)
        finally:
            local.busy = busy
        if outcome == RAISED and call.parent is not None:
            call.parent.escaped = value  # the exception event is on this span already
        if _deferred and not busy and not _exporting():
            _drain_deferred()

    def _arguments(self, call: Call) -> dict[str, Any]:
        """The argument attributes of ``call`` (rendered now unless at start)."""
        attrs = call.attrs
        if attrs is not None:
            return dict(attrs)
        if not self.capture_args:
            return {}
        info = call.info
        try:
            if call.values is not None:
                out = self._render_values(info, call.values)
            elif call.kwargs is not None:
                out = self.formatter.call_arguments(info, call.instance, call.args,
                                                    call.kwargs)
            else:
                out = {}
        except Exception:
            log_once("arguments", "autotrace: could not record the arguments of %s",
                     info.span_name)
            out = {}
        call.instance = call.args = call.kwargs = call.values = None  # type: ignore[assignment]
        return out

    def _render_now(self, info: FunctionInfo, instance: Any, args: tuple[Any, ...],
                    kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
        if not self.capture_args:
            return None
        local = _local
        local.busy = True
        try:
            return self.formatter.call_arguments(info, instance, args, kwargs)
        except Exception:
            log_once("arguments", "autotrace: could not record the arguments of %s",
                     info.span_name)
            return None
        finally:
            local.busy = False

    def _render_values(self, info: FunctionInfo, values: list[Any]) -> dict[str, Any]:
        local = _local
        busy = local.busy
        local.busy = True
        try:
            return self.formatter.render_values(info, values)
        finally:
            local.busy = busy

    # -- pending calls made real --------------------------------------------------------

    def materialize_innermost(self, root: Call) -> Span | None:
        """For ``PendingSpan``: the innermost pending call under ``root`` now, made real."""
        node = _current.get()
        walk = node
        while walk is not None and walk is not root:
            walk = walk.parent
        return self._materialize(node if walk is root and node is not None else root)

    def _materialize(self, call: Call) -> Span | None:
        """Start real spans for ``call`` and its pending ancestors, outermost first,
        each with its recorded start time; ancestors already dropped are skipped."""
        tracer = self.tracer
        if tracer is None:
            return None
        local = _local
        busy = local.busy
        local.busy = True
        try:
            with self._lock:
                if call.span is not None:
                    return call.span
                chain: list[Call] = []
                node: Call | None = call
                parent_span: Span = INVALID_SPAN
                while node is not None:
                    if node.span is not None:
                        parent_span = node.span
                        break
                    if not node.closed:
                        chain.append(node)
                    if not node.under_pending:
                        parent_span = _get_current_span(node.parent_ctx)
                        break
                    node = node.parent
                for pending in reversed(chain):
                    info = pending.info
                    ctx = _set_span_in_context(parent_span, pending.parent_ctx)
                    pending.span = tracer.start_span(info.span_name, ctx, _INTERNAL,
                                                     info.static_attributes,
                                                     start_time=pending.start_ns)
                    parent_span = pending.span
                return call.span
        except Exception:
            log_once("materialize", "autotrace: could not start the spans of a kept call")
            return None
        finally:
            local.busy = busy
