"""Where the ``autotrace`` command sends spans: ``OTEL_TRACES_EXPORTER`` (or ``--exporter``).

* unset: the call tree on stderr (``console.CallTreeProcessor``);
* ``console``: the SDK's ``ConsoleSpanExporter`` (JSON), on stderr so the
  program's stdout stays its own;
* ``otlp``: OTLP over HTTP/protobuf, or gRPC when ``OTEL_EXPORTER_OTLP_PROTOCOL``
  (or ``..._TRACES_PROTOCOL``) is ``grpc`` and that exporter is installed; the
  standard endpoint, header and timeout variables apply;
* ``none``: nothing; any other name: an ``opentelemetry_traces_exporter`` entry point.

A failing exporter (collector down) must not disturb the program: its own
per-attempt log records are silenced, one warning is printed, and exit waits
at most the export timeout (not at all once the exporter is known to fail).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import weakref
from collections.abc import Mapping, Sequence
from importlib.util import find_spec
from typing import Callable, TextIO
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from .._log import logger
from .exporter_env import ENV_EXPORTER as ENV_EXPORTER
from .exporter_env import KNOWN_EXPORTERS as KNOWN_EXPORTERS
from .exporter_env import exporter_names

DEFAULT_TIMEOUT = 10.0
ENV_QUEUE_SIZE = "OTEL_BSP_MAX_QUEUE_SIZE"
DEFAULT_QUEUE_SIZE = 16384

_HTTP_MODULE = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
_GRPC_MODULE = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
_ENTRY_POINT_GROUP = "opentelemetry_traces_exporter"
#: Loggers of the exporters, their HTTP clients and the SDK's batch processor.
_NOISY = ("opentelemetry.exporter", "opentelemetry.sdk._shared_internal",
          "opentelemetry.sdk.trace.export", "urllib3", "requests", "grpc")


def check_exporters(environ: Mapping[str, str], source: str = ENV_EXPORTER) -> str | None:
    """Why these exporters cannot be used here (a message naming the fix), or None."""
    for name in exporter_names(environ):
        if name in ("console", "none", "trace-file"):
            continue
        if name == "otlp":
            if find_spec_safe(_HTTP_MODULE) is None and find_spec_safe(_GRPC_MODULE) is None:
                return (f"{source}=otlp needs the OTLP exporter, which is not installed: "
                        "pip install opentelemetry-exporter-otlp-proto-http")
            problem = endpoint_problem(environ)
            if problem:
                return problem
            continue
        if _entry_point(name) is None:
            return (f"{source}={name!r} is not an exporter; use one of "
                    + ", ".join(KNOWN_EXPORTERS) + " (or an installed "
                    f"{_ENTRY_POINT_GROUP} entry point)")
    return None


def endpoint_problem(environ: Mapping[str, str]) -> str | None:
    """Why the OTLP/HTTP endpoint variable cannot be a collector's address, or None.

    (gRPC takes ``host:port`` too, so only the HTTP protocol's endpoints are checked.)"""
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip().lower()
    if protocol == "grpc":
        return None
    for var in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        raw = environ.get(var, "").strip()
        if not raw:
            continue
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return (f"{var}={raw!r} is not a URL; give the collector's, e.g. "
                    f"{var}=http://localhost:4318")
        return None
    return None


def find_spec_safe(module: str) -> object | None:
    try:
        return find_spec(module)
    except (ImportError, ValueError):
        return None


def export_timeout(environ: Mapping[str, str]) -> float:
    """The OTLP export timeout in seconds, as the Python exporters read it."""
    for var in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        raw = environ.get(var, "").strip()
        if raw:
            try:
                value = float(raw)
            except ValueError:
                continue
            if value > 0:
                return value
    return DEFAULT_TIMEOUT


def span_processors(environ: Mapping[str, str], stream: TextIO) -> list[SpanProcessor]:
    """The processors for the exporters ``environ`` asks for (the call tree when unset)."""
    from .console import CallTreeProcessor

    names = exporter_names(environ)
    if not names:
        return [CallTreeProcessor(stream)]
    processors: list[SpanProcessor] = []
    for name in dict.fromkeys(names):
        if name == "none":
            continue
        try:
            if name == "console":
                processors.append(SimpleSpanProcessor(ConsoleSpanExporter(out=stream)))
            elif name == "trace-file":
                from .tracefile import trace_file_processor

                processors.append(trace_file_processor(environ, stream))
            elif name == "otlp":
                processors.append(_guarded(*_otlp_exporter(environ, stream), environ, stream))
            else:
                factory = _entry_point(name)
                if factory is None:
                    _warn(stream, f"{ENV_EXPORTER}={name!r} is not an installed exporter; "
                          "its spans are dropped")
                    continue
                processors.append(_guarded(factory(), name, environ, stream))
        except Exception as exc:
            _warn(stream, f"could not set up the {name!r} exporter ({type(exc).__name__}: "
                  f"{exc}); its spans are dropped")
    return processors


def _otlp_exporter(environ: Mapping[str, str], stream: TextIO) -> tuple[SpanExporter, str]:
    problem = endpoint_problem(environ)
    if problem:
        raise ValueError(problem)
    timeout = export_timeout(environ)
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip().lower()
    if protocol == "grpc" or find_spec_safe(_HTTP_MODULE) is None:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found, unused-ignore]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            _warn(stream, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc but the gRPC exporter is not "
                  "installed (pip install opentelemetry-exporter-otlp-proto-grpc); using "
                  "http/protobuf")
        else:
            exporter = GrpcExporter(timeout=timeout)  # type: ignore[arg-type, unused-ignore]
            return exporter, str(getattr(exporter, "_endpoint", "the OTLP/gRPC endpoint"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    http_exporter = OTLPSpanExporter(timeout=timeout)
    return http_exporter, str(getattr(http_exporter, "_endpoint", "the OTLP endpoint"))


def _entry_point(name: str) -> Callable[[], SpanExporter] | None:
    from importlib.metadata import entry_points

    for entry_point in entry_points(group=_ENTRY_POINT_GROUP):
        if entry_point.name == name:
            return entry_point.load()  # type: ignore[no-any-return]
    return None


def _guarded(exporter: SpanExporter, target: str, environ: Mapping[str, str],
             stream: TextIO) -> SpanProcessor:
    guard = GuardedExporter(exporter, target, stream)
    timeout = export_timeout(environ)
    # Tracing every call of a loop makes bursts the SDK's 2048 would drop.
    queue = None if environ.get(ENV_QUEUE_SIZE, "").strip() else DEFAULT_QUEUE_SIZE
    return BoundedShutdownProcessor(BatchSpanProcessor(guard, max_queue_size=queue), guard,
                                    timeout)


def _warn(stream: TextIO, message: str) -> None:
    try:
        stream.write(f"autotrace: {message}\n")
        stream.flush()
    except Exception:
        logger.warning("autotrace: %s", message)


class _Quiet(threading.local):
    exporting = False
    reason: str | None = None
    guard: GuardedExporter | None = None


_quiet = _Quiet()
_failing = threading.Event()
_overflowed = threading.Event()


class _SilenceExport(logging.Filter):
    """Drops what exporters log while autotrace exports, keeping the first reason;
    the batch processor's "Queue full" (reported once, at exit); and its other
    warnings once an export has failed."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _quiet.exporting:
            if _quiet.reason is None and record.levelno >= logging.WARNING:
                try:
                    _quiet.reason = record.getMessage()
                except Exception:
                    _quiet.reason = str(record.msg)
                guard = _quiet.guard
                if guard is not None:
                    # An attempt failed: the exporter now backs off and retries (1 + 2 +
                    # 4 s); at exit, that is time the program waits for nothing.
                    guard.attempt_failed = True
                    if guard.closing:
                        guard.abort()
            return False
        if record.name.startswith("opentelemetry.sdk"):
            if str(record.msg).startswith("Queue full"):
                _overflowed.set()
                return False
            return not _failing.is_set()
        return True


_FILTER = _SilenceExport()


def _silence_export_logs() -> None:
    """Attach the filter to every exporter-related logger that exists now.

    Filters do not inherit, so each logger gets it; this runs again at the
    first export, when the HTTP client's modules have been imported.
    """
    for name in (*_NOISY, "opentelemetry.exporter.otlp.proto.http.trace_exporter",
                 "opentelemetry.exporter.otlp.common.http",
                 "opentelemetry.exporter.otlp.proto.grpc.exporter",
                 "urllib3.connectionpool"):
        logging.getLogger(name)
    for name, candidate in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(candidate, logging.Logger) and name.startswith(_NOISY):
            if _FILTER not in candidate.filters:
                candidate.addFilter(_FILTER)


class GuardedExporter(SpanExporter):
    """Wraps a real exporter: one warning on failure, nothing else printed.

    Once an export has failed and the program is exiting, the remaining
    spans are dropped at once instead of waiting for the endpoint again.
    """

    def __init__(self, exporter: SpanExporter, target: str, stream: TextIO) -> None:
        self.exporter = exporter
        self.target = target
        self._stream = stream
        self._lock = threading.Lock()
        self._warned = False
        self.failed = False
        self.closing = False
        self._rescanned = False
        self._aborted = False
        #: An attempt of the export in progress (or the last one) failed.
        self.attempt_failed = False
        _silence_export_logs()
        if hasattr(os, "register_at_fork"):  # a lock held by another thread at fork
            reset = weakref.WeakMethod(self._after_fork)
            os.register_at_fork(after_in_child=lambda: (reset() or (lambda: None))())

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.closing and self.failed:
            return SpanExportResult.FAILURE
        if not self._rescanned:
            self._rescanned = True
            _silence_export_logs()
        _quiet.exporting, _quiet.reason, _quiet.guard = True, None, self
        try:
            result = self.exporter.export(spans)
            reason = _quiet.reason
        except Exception as exc:
            result, reason = SpanExportResult.FAILURE, f"{type(exc).__name__}: {exc}"
        finally:
            _quiet.exporting, _quiet.guard = False, None
        if result is SpanExportResult.SUCCESS:
            self.failed = self.attempt_failed = False
            return result
        self.failed = True
        _failing.set()
        _silence_export_logs()
        cause = _one_line(reason) if reason else ""
        question = " Is the collector running?" if _CONNECTION.search(cause) else ""
        self.warn(f"could not export spans to {self.target}"
                  + (f" ({cause})" if cause else "")
                  + f"; spans are dropped while this lasts.{question} "
                  "Further export errors are not reported")
        return result

    def abort(self) -> None:
        """Stop the exporter's retries now (its shutdown interrupts the backoff wait)."""
        with self._lock:
            if self._aborted:
                return
            self._aborted = True
        try:
            self.exporter.shutdown()
        except Exception:
            logger.debug("autotrace: exporter shutdown failed", exc_info=True)

    def warn(self, message: str) -> None:
        with self._lock:
            if self._warned:
                return
            self._warned = True
        _warn(self._stream, message)

    def shutdown(self) -> None:
        if not self._aborted:
            self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


_CONNECTION = re.compile(r"connect|refused|unreachable|resolve|timed? ?out", re.IGNORECASE)
_RETRYING = re.compile(
    r"[,;]? *(?:encountered while exporting \w+ batch)?, retrying in [\d.]+s\.?$")


def _one_line(text: str) -> str:
    """The whole cause on one line, without the exporter's "retrying" (it no longer does)."""
    return _RETRYING.sub("", " ".join(text.split()))


class _Helper:
    """A thread started with the processor that can run the final flush later:
    Python 3.12 refuses to start threads from exit handlers."""

    def __init__(self) -> None:
        self._job: Callable[[], None] | None = None
        self._wake = threading.Event()
        self.done = threading.Event()
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._main, name="autotrace-export-exit",
                                        daemon=True)
        self._thread.start()

    def _main(self) -> None:
        self._wake.wait()
        try:
            if self._job is not None:
                self._job()
        except Exception:
            logger.debug("autotrace: exporter shutdown failed", exc_info=True)
        finally:
            self.done.set()

    def run(self, job: Callable[[], None]) -> bool:
        """Start ``job`` on the helper thread; False if that thread is gone (after fork)."""
        if self._pid != os.getpid() or not self._thread.is_alive():
            return False
        self._job = job
        self._wake.set()
        return True


class BoundedShutdownProcessor(SpanProcessor):
    """A batch processor whose shutdown (the exit flush) waits at most ``timeout`` s."""

    def __init__(self, inner: SpanProcessor, guard: GuardedExporter, timeout: float) -> None:
        self.inner = inner
        self.guard = guard
        self.timeout = timeout
        self._helper = _Helper()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self.inner.on_end(span)

    def shutdown(self) -> None:
        self.guard.closing = True
        if self.guard.failed or self.guard.attempt_failed:
            self.guard.abort()  # known to fail: interrupt an export retrying in the worker
        if not self._helper.run(self.inner.shutdown):
            self.inner.shutdown()
            return
        if not self._helper.done.wait(self.timeout):
            self.guard.warn(f"could not export spans to {self.guard.target} within the "
                            f"export timeout ({self.timeout:g} s); the remaining spans are "
                            "dropped")
        elif _overflowed.is_set():
            self.guard.warn(f"some spans were dropped: more were waiting for export than "
                            f"{ENV_QUEUE_SIZE} allows; raise it, or trace less (--exclude)")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
