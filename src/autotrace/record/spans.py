"""Opening and closing spans: the one hot path every backend calls.

``open`` and ``close`` reproduce ``tracer.start_as_current_span`` around a
call (same parent, same current span inside the body, same status rules)
without its generator-based context managers: ``start_span`` with the static
attributes in one mapping, then ``attach``; on the way out ``detach`` and
``end``. Argument and return rendering only happens for recording spans.

Re-entry: while autotrace is at work on a thread (starting a span, rendering
a value, ending a span, which may export synchronously) calls made on that
thread are not traced. That keeps a traced ``__repr__``, span processor,
exporter or signal handler from recursing or deadlocking. OpenTelemetry's
suppress-instrumentation context key, set by the SDK's processors while they
export, is honoured the same way.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Mapping
from time import time_ns
from types import FrameType
from typing import Any, Tuple

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace import NoOpTracer, ProxyTracerProvider, Span, SpanKind, Tracer

from .._log import log_once
from .._version import __version__
from ..config import Config
from ..describe.function import RETURN_KEY, Formatter, FunctionInfo
from . import globalprovider
from .ids import use_private_ids

TRACER_NAME = "autotrace"

#: What ``open`` returns: the span, the context token, the fork generation, and
#: the context holding the span (generators re-attach it on every resume).
Opened = Tuple[Span, Any, int, Any]

_INTERNAL = SpanKind.INTERNAL
_get_current = context_api.get_current
_attach = context_api.attach
_detach = context_api.detach
_set_span_in_context = trace.set_span_in_context
_CO_OPTIMIZED = 0x1

#: Spans whose end was requested where ending them could re-enter an exporter: the
#: garbage collector finalising an abandoned traced generator while this thread is in
#: autotrace's own work or an export (an exporter holding a lock would deadlock). They
#: end, with the time they were due, as soon as a span closes outside such work.
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


def is_busy() -> bool:
    return _local.busy


def _exporting() -> bool:
    """Whether this thread is inside an SDK processor's export (of any span)."""
    return bool(_get_current().get(_SUPPRESS_INSTRUMENTATION_KEY))


def _end(span: Span, defer: bool) -> None:
    if defer:
        _deferred.append((span, time_ns()))
    else:
        span.end()


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


def escaped_from_traced_child(exc: BaseException, traced_codes: Any) -> bool:
    """Whether ``exc`` already escaped a traced call below the frame handling it.

    The traceback's first entry is the frame handling ``exc`` now; a deeper
    entry whose code is a traced function's (or a wrapper's) means an inner
    span already carries the exception event.
    """
    tb = exc.__traceback__
    if tb is None:
        return False
    tb = tb.tb_next
    while tb is not None:
        if tb.tb_frame.f_code in traced_codes:
            return True
        tb = tb.tb_next
    return False


class Tracing:
    """Span lifecycle for one installation; shared by every backend."""

    def __init__(self, config: Config, formatter: Formatter) -> None:
        self.formatter = formatter
        self.capture_args = config.capture_args
        self.capture_return = config.capture_return
        self.active = True
        self._provider = config.tracer_provider
        self._checked_provider: object = None
        #: Nothing to record (no provider yet, or a no-op one): calls pass through.
        self.dormant = False
        self._on_ready: list[Callable[[], None]] = []
        self.tracer: Tracer | None = None
        self.resolve()

    def resolve(self) -> Tracer | None:
        """Find the tracer; ``None`` while there is nothing to record.

        With no global provider yet, the installation goes *dormant*: traced
        calls pass straight through until ``set_tracer_provider`` runs (see
        ``globalprovider``). A no-op provider makes it dormant for good.
        """
        provider = self._provider or trace.get_tracer_provider()
        if isinstance(provider, ProxyTracerProvider):
            if globalprovider.watch(self):
                self.dormant = True
            return None
        if provider is self._checked_provider:
            return None
        self._checked_provider = provider
        try:
            tracer = provider.get_tracer(TRACER_NAME, __version__)
        except Exception:  # the provider's fault: run untraced rather than fail the call
            log_once("get_tracer", "autotrace: %r could not make a tracer; calls run untraced",
                     provider)
            return None
        use_private_ids(tracer)  # spans must not advance the program's `random`
        if isinstance(tracer, NoOpTracer):
            self.dormant = True
            return None
        self.tracer = tracer
        return tracer

    def global_provider_set(self) -> None:
        """The program set the global provider: wake up (see ``resolve``)."""
        self.dormant = False
        if self.active and self.resolve() is not None:
            for callback in self._on_ready:
                callback()

    def on_ready(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when a dormant installation gets a tracer."""
        self._on_ready.append(callback)

    def open(self, info: FunctionInfo, instance: Any, args: tuple[Any, ...],
             kwargs: Mapping[str, Any], frame: FrameType | None = None) -> Opened | None:
        """Start a span for a call and make it current; ``None``: run untraced.

        Arguments come from the call (``instance, args, kwargs``) or, when
        ``frame`` is given, from the callee's frame, which has just started.
        """
        if not self.active:
            return None
        local = _local
        if local.busy:
            return None
        tracer = self.tracer
        if tracer is None:
            if self.dormant:
                return None
            tracer = self.resolve()
            if tracer is None:
                return None
        ctx = _get_current()
        if ctx.get(_SUPPRESS_INSTRUMENTATION_KEY):
            return None
        local.busy = True
        try:
            span = tracer.start_span(info.span_name, ctx, _INTERNAL, info.static_attributes)
            if self.capture_args and span.is_recording():
                try:
                    if frame is None:
                        attrs = self.formatter.call_arguments(info, instance, args, kwargs)
                    else:
                        f_locals = frame.f_locals
                        attrs = self.formatter.frame_arguments(info, f_locals)
                        if type(f_locals) is dict and frame.f_code.co_flags & _CO_OPTIMIZED:
                            # 3.12: a snapshot the frame keeps until it dies; it would
                            # pin arguments the body deletes. The body never sees it.
                            f_locals.clear()
                    span.set_attributes(attrs)
                except Exception:
                    log_once("arguments", "autotrace: could not record the arguments of %s",
                             info.span_name)
            span_ctx = _set_span_in_context(span, ctx)
            token = _attach(span_ctx)
        except Exception:
            log_once("open", "autotrace: could not start a span for %s; the call runs "
                     "untraced", info.span_name)
            return None
        finally:
            local.busy = False
        return span, token, _fork_generation, span_ctx

    def close(self, opened: Opened, info: FunctionInfo, result: Any) -> None:
        """The call returned ``result``: restore the context and end the span."""
        span, token, generation, _ = opened
        _detach(token)
        if generation != _fork_generation:
            return
        local = _local
        busy = local.busy
        local.busy = True
        try:
            try:
                if self.capture_return and span.is_recording():
                    span.set_attribute(RETURN_KEY, self.formatter.return_value(info, result))
            finally:
                _end(span, busy)  # whatever recording did: a span that started must end
        except Exception:
            log_once("close", "autotrace: could not end the span of %s", info.span_name)
        finally:
            local.busy = busy
        if _deferred and not busy and not _exporting():
            _drain_deferred()

    def close_failed(self, opened: Opened, info: FunctionInfo, exc: BaseException,
                     traced_codes: Any) -> None:
        """The call raised ``exc``: record it (event on the innermost span) and end."""
        span, token, generation, _ = opened
        _detach(token)
        if generation != _fork_generation:
            return
        local = _local
        busy = local.busy
        local.busy = True
        try:
            try:
                if span.is_recording():
                    self.formatter.record_failure(
                        span, exc, not escaped_from_traced_child(exc, traced_codes))
            finally:
                # GeneratorExit: maybe a generator finalised by the GC, anywhere
                _end(span, busy or (type(exc) is GeneratorExit and _exporting()))
        except Exception:
            log_once("close", "autotrace: could not end the span of %s", info.span_name)
        finally:
            local.busy = busy
        if _deferred and not busy and not _exporting():
            _drain_deferred()

    def close_abandoned(self, opened: Opened, info: FunctionInfo) -> None:
        """A suspended generator vanished without an event: end its span, not an error.

        Its context was already detached when it suspended.
        """
        span, _, generation, _ = opened
        if generation != _fork_generation:
            return
        local = _local
        busy = local.busy
        local.busy = True
        try:
            _end(span, busy or _exporting())  # called from a finaliser: anywhere
        except Exception:
            log_once("close", "autotrace: could not end the span of %s", info.span_name)
        finally:
            local.busy = busy

    def suspend(self, opened: Opened) -> Opened:
        """Generators: leave the span open but stop it being current."""
        _detach(opened[1])
        return opened

    def resume(self, opened: Opened) -> Opened:
        """Generators: make a suspended span current again, in the context it began in."""
        span, _, generation, span_ctx = opened
        return span, _attach(span_ctx), generation, span_ctx
