"""The span output: where the tracer comes from, and what stands in for a call not yet kept.

``TracerSource`` finds the tracer lazily. With no global provider yet the
installation is *dormant* (calls pass straight through) until the program
calls ``set_tracer_provider`` (see ``globalprovider``); a no-op provider makes
it dormant for good.

``PendingSpan`` is what a call that may still be dropped (``min_duration``)
puts in the OpenTelemetry context instead of a real span. Whoever asks it for
its span context (an instrumentation starting a child span, a log handler
correlating, ``propagate.inject``) turns the pending chain into real spans on
the spot, with their recorded start times, and so keeps those calls: a span
from elsewhere never points at a parent that is not exported.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable, Protocol

from opentelemetry import trace
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    NoOpTracer,
    ProxyTracerProvider,
    Span,
    SpanContext,
    Status,
    StatusCode,
    Tracer,
)

from .._log import log_once
from .._version import __version__
from ..describe.redaction import SCAN_MARGIN
from ..describe.values import ELLIPSIS, qualified_type_name
from . import globalprovider
from .ids import use_private_ids

TRACER_NAME = "autotrace"
#: On the deepest kept span of a chain cut by ``max_depth``: traced calls below it
#: that made no span because they were deeper than the limit.
DEPTH_LIMITED_KEY = "autotrace.depth_limited_calls"
#: On a kept call: the exceptions its traced children raised and it handled (parallel
#: arrays of exception type names and counts; ``keep_errors``).
HANDLED_TYPES_KEY = "autotrace.handled_exceptions.type"
HANDLED_COUNTS_KEY = "autotrace.handled_exceptions.count"


def handled_attributes(counts: dict[str, int]) -> dict[str, Any]:
    names = sorted(counts)
    return {HANDLED_TYPES_KEY: tuple(names),
            HANDLED_COUNTS_KEY: tuple(counts[name] for name in names)}
_MAX_STACKTRACE = 16384
_TYPE_NAME = type.__dict__["__name__"]


class _Owner(Protocol):
    dormant: bool

    def global_provider_set(self) -> None: ...


#: ``get_description()`` of the SDK's ``ALWAYS_ON`` sampler (a public answer, where the
#: sampler's fields are private); ``ParentBased`` names its root's inside its own.
_ALWAYS_ON = "AlwaysOnSampler"


def making_tracer(tracer: Any) -> Any:
    """The tracer that makes the spans behind ``tracer``: through the API's ``ProxyTracer``
    and the command's fallback tracer (``current()``), which may each resolve to another
    one later; None if it cannot be told."""
    try:
        for _ in range(4):
            if isinstance(tracer, trace.ProxyTracer):
                tracer = getattr(tracer, "_tracer", None)
            elif callable(getattr(type(tracer), "current", None)):
                tracer = tracer.current()
            else:
                return tracer
    except Exception:
        return None
    return tracer


def samples_every_root(tracer: Any) -> bool:
    """Whether ``tracer`` (one that makes spans: ``making_tracer``) records every span
    started with no parent: its sampler is the SDK's ``ALWAYS_ON``, or a ``ParentBased``
    over it (the SDK's default). Anything else (a ratio, a sampler of the program's, a
    tracer that is not the SDK's): not known, so False."""
    try:
        sampler = getattr(tracer, "sampler", None)
        if sampler is None:
            return False
        description = sampler.get_description()
    except Exception:
        return False
    return isinstance(description, str) and (
        description == _ALWAYS_ON or description.startswith(f"ParentBased{{root:{_ALWAYS_ON},"))


class TracerSource:
    """The tracer of one installation, resolved lazily (see module docstring)."""

    def __init__(self, provider: Any, owner: _Owner) -> None:
        self._provider = provider
        self._checked: object = None
        self._owner = owner  # its ``dormant`` is set here, read on every call

    def resolve(self) -> Tracer | None:
        provider = self._provider or trace.get_tracer_provider()
        if isinstance(provider, ProxyTracerProvider):
            if globalprovider.watch(self._owner):
                self._owner.dormant = True
            return None
        if provider is self._checked:
            return None
        self._checked = provider
        try:
            tracer = provider.get_tracer(TRACER_NAME, __version__)
        except Exception:  # the provider's fault: run untraced rather than fail the call
            log_once("get_tracer", "autotrace: %r could not make a tracer; calls run untraced",
                     provider)
            return None
        use_private_ids(tracer)  # spans must not advance the program's `random`
        if isinstance(tracer, NoOpTracer):
            self._owner.dormant = True
            return None
        return tracer


class _Materializer(Protocol):
    """What a ``PendingSpan`` asks (the recorder): the real span of the innermost
    pending call running over ``base``, made now; None if there is none."""

    def materialize_innermost(self, base: Any) -> Span | None: ...


class PendingSpan(Span):
    """Stands in the context for a chain of calls not yet kept (see module docstring).

    One is attached by the outermost pending call of a chain; calls nested in
    it find it current and attach nothing. Asked for anything, it makes the
    innermost pending call running under it (and that call's ancestors) real.
    """

    __slots__ = ("_base", "_recorder")

    def __init__(self, recorder: _Materializer, base: Any) -> None:
        self._recorder = recorder
        self._base = base  # the context it was attached over

    def _real(self) -> Span | None:
        return self._recorder.materialize_innermost(self._base)

    def get_span_context(self) -> SpanContext:
        span = self._real()
        return INVALID_SPAN_CONTEXT if span is None else span.get_span_context()

    def is_recording(self) -> bool:
        return True

    def set_attributes(self, attributes: Any) -> None:
        span = self._real()
        if span is not None:
            span.set_attributes(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        span = self._real()
        if span is not None:
            span.set_attribute(key, value)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        span = self._real()
        if span is not None:
            span.add_event(name, attributes, timestamp)

    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        span = self._real()
        if span is not None:
            span.add_link(context, attributes)

    def update_name(self, name: str) -> None:
        span = self._real()
        if span is not None:
            span.update_name(name)

    def set_status(self, status: Any, description: str | None = None) -> None:
        span = self._real()
        if span is not None:
            span.set_status(status, description)

    def record_exception(self, exception: BaseException, attributes: Any = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        span = self._real()
        if span is not None:
            span.record_exception(exception, attributes, timestamp, escaped)

    def end(self, end_time: int | None = None) -> None:
        """autotrace ends the real span when the call ends."""

    def __repr__(self) -> str:
        return "<autotrace PendingSpan>"


def record_failure(span: Span, exc: BaseException, with_event: bool, max_length: int,
                   scrub: Callable[[str], str] | None = None) -> None:
    """Mark ``span`` failed by ``exc``; ``with_event`` on the innermost span only.

    Like OpenTelemetry's ``use_span``, only ``Exception`` subclasses are errors:
    GeneratorExit, KeyboardInterrupt, SystemExit and CancelledError are not.
    ``scrub`` (value-aware redaction) runs over the message and the traceback, which
    repeats the message (and those of chained exceptions and notes).
    """
    if not isinstance(exc, Exception):
        return
    exc_type = type(exc)
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable message>"
    if scrub is not None:
        message = scrub(message[: max_length + SCAN_MARGIN])
    if len(message) > max_length:
        message = message[: max_length - 1] + ELLIPSIS
    short_name = _TYPE_NAME.__get__(exc_type)  # not exc_type.__name__: metaclasses
    span.set_status(Status(StatusCode.ERROR, f"{short_name}: {message}"))
    type_name = qualified_type_name(exc_type)
    span.set_attribute(ERROR_TYPE, type_name)
    if with_event:
        try:
            stack = "".join(traceback.format_exception(exc_type, exc, exc.__traceback__))
        except Exception:
            stack = ""
        if len(stack) > _MAX_STACKTRACE:
            stack = ELLIPSIS + stack[-_MAX_STACKTRACE:]
        if scrub is not None:
            stack = scrub(stack)
        span.add_event("exception", {
            EXCEPTION_TYPE: type_name,
            EXCEPTION_MESSAGE: message,
            EXCEPTION_STACKTRACE: stack,
        })
