"""The tracer provider the ``autotrace`` command gives autotrace: the program's own, else ours.

The bootstrap runs before the program, so it cannot know whether the program
will configure OpenTelemetry. Setting a global SDK provider there would make
the program's own ``set_tracer_provider`` fail ("Overriding of current
TracerProvider is not allowed"). Instead autotrace gets a provider of its own
that is never made global: each span starts in the program's global provider
once one is set, and in an SDK provider built from the standard environment
(``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``, ``OTEL_TRACES_EXPORTER``, ...)
until then.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Callable, TextIO, cast

from opentelemetry import trace
from opentelemetry.trace import NoOpTracer, ProxyTracer, Span, Tracer, TracerProvider

from ..config import TRUE_WORDS
from ..record.ids import PRIVATE_IDS, use_private_ids
from .exporter_env import exporter_names

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider


def default_provider(environ: Mapping[str, str], stream: TextIO) -> TracerProvider | None:
    """autotrace's provider for this process, or None when nothing is to be recorded.

    The SDK provider and its exporters are built at the first span, not here: importing
    them costs more than the rest of the start-up, in every process the command runs,
    most of which never make a span (issue 13.15)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in TRUE_WORDS:
        return None
    names = exporter_names(environ)
    if names and all(name == "none" for name in names):
        return None
    environ = dict(environ)

    def build() -> SdkTracerProvider:
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

        from .exporters import span_processors

        # Private ids: a seeded program's `random` must not be advanced (nor decide trace
        # ids). Shut down by our own exit handler, registered now, before the program's.
        sdk = SdkTracerProvider(id_generator=cast(Any, PRIVATE_IDS), shutdown_on_exit=False)
        from .spancount import SpanCounter

        sdk.add_span_processor(SpanCounter(stream))
        for processor in span_processors(environ, stream):
            sdk.add_span_processor(processor)
        return sdk

    provider = FallbackTracerProvider(build)
    atexit.register(provider.shutdown)
    return provider


#: Longest wait of each flush before a process dies by a signal (``shutdown``).
SIGNAL_FLUSH_MILLIS = 5000


def flush_providers(provider: TracerProvider | None) -> None:
    """Push out the spans of ``provider`` and of the global provider (a program's own, or
    a distro's), each waiting at most ``SIGNAL_FLUSH_MILLIS``."""
    for each in dict.fromkeys([provider, trace.get_tracer_provider()]):
        flush = getattr(each, "force_flush", None)
        if flush is not None:
            flush(SIGNAL_FLUSH_MILLIS)


class FallbackTracerProvider(TracerProvider):
    """Hands out tracers that use the global provider once the program has set one, and
    until then an SDK provider of autotrace's own, built when first needed."""

    def __init__(self, build: Callable[[], SdkTracerProvider]) -> None:
        self._build = build
        self._default: SdkTracerProvider | None = None
        self._lock = threading.Lock()

    @property
    def default(self) -> SdkTracerProvider:
        default = self._default
        if default is None:
            with self._lock:
                default = self._default
                if default is None:
                    default = self._default = self._build()
        return default

    def get_tracer(self, instrumenting_module_name: str,
                   instrumenting_library_version: str | None = None,
                   schema_url: str | None = None,
                   attributes: Any = None) -> Tracer:
        args = (instrumenting_module_name, instrumenting_library_version, schema_url, attributes)
        return FallbackTracer(lambda: self.default.get_tracer(*args), ProxyTracer(*args))

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True if self._default is None else self._default.force_flush(timeout_millis)

    def shutdown(self) -> None:
        if self._default is not None:
            self._default.shutdown()


class FallbackTracer(Tracer):
    """The default (built on first use) until the API's proxy resolves to the program's
    provider, then that."""

    def __init__(self, default: Callable[[], Tracer], probe: ProxyTracer) -> None:
        self._make_default = default
        self._default_tracer: Tracer | None = None
        self._probe = probe
        self._real: Tracer | None = None

    @property
    def _default(self) -> Tracer:
        tracer = self._default_tracer
        if tracer is None:
            tracer = self._default_tracer = self._make_default()
        return tracer

    def current(self) -> Tracer:
        real = self._real
        if real is not None:
            return real
        found = getattr(self._probe, "_tracer", None)
        if found is None:  # an API without the proxy internals: ask the slow way
            provider = trace.get_tracer_provider()
            if isinstance(provider, trace.ProxyTracerProvider):
                return self._default
            found = self._probe
        if isinstance(found, NoOpTracer):
            return self._default
        use_private_ids(found)  # the program's provider made it: the default ids are shared
        self._real = found
        return found

    def start_span(self, name: str, context: Any = None, kind: Any = trace.SpanKind.INTERNAL,
                   attributes: Any = None, links: Sequence[Any] | None = None,
                   start_time: int | None = None, record_exception: bool = True,
                   set_status_on_exception: bool = True) -> Span:
        return self.current().start_span(name, context, kind, attributes, links, start_time,
                                         record_exception, set_status_on_exception)

    def start_as_current_span(self, name: str, context: Any = None,
                              kind: Any = trace.SpanKind.INTERNAL, attributes: Any = None,
                              links: Sequence[Any] | None = None, start_time: int | None = None,
                              record_exception: bool = True,
                              set_status_on_exception: bool = True,
                              end_on_exit: bool = True) -> Any:
        return self.current().start_as_current_span(
            name, context, kind, attributes, links, start_time, record_exception,
            set_status_on_exception, end_on_exit)
