"""autotrace as an OpenTelemetry instrumentor (``opentelemetry-instrument``).

Registered as the ``opentelemetry_instrumentor`` entry point ``autotrace``, so
``opentelemetry-instrument python app.py`` with
``OTEL_PYTHON_AUTOTRACE_PATTERNS=app`` (or ``--autotrace_patterns=app``)
traces the app's functions, and ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=autotrace``
turns it off. Needs ``otel-autotrace[instrument]``.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined, unused-ignore]
    BaseInstrumentor,
)

from .._log import logger
from ..config import API_OPTIONS, OPTIONS_BY_NAME, file_settings
from ..core import Installation, active_installation, install
from ..loading.mainscript import hook_main_script
from . import propagation
from .provider import flush_providers
from .shutdown import before_signal_death

#: ``instrument()`` keyword arguments passed on to ``autotrace.install()``.
INSTALL_OPTIONS = tuple(option.name for option in API_OPTIONS if option.env_var)
ENV_PATTERNS = OPTIONS_BY_NAME["patterns"].env


class AutotraceInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """``instrument(tracer_provider=..., **install_options)`` / ``uninstrument()``.

    Settings not given come from ``OTEL_PYTHON_AUTOTRACE_*``, then from the
    configuration file (``[tool.autotrace]``, ``autotrace.toml``). Without any
    patterns it does nothing (said at debug level): being installed must not
    start tracing anything by itself. A bad setting is logged as an error
    rather than raised, so the other instrumentations still load.
    """

    _installation: Installation | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        options = {key: kwargs[key] for key in INSTALL_OPTIONS if kwargs.get(key) is not None}
        try:
            configured = ("patterns" in options or bool(os.environ.get(ENV_PATTERNS, "").strip())
                          or "patterns" in file_settings(os.environ)[0])
        except ValueError as exc:  # the configuration file is bad
            logger.error("autotrace instrumentor: %s; nothing is traced", exc)
            return
        if not configured:
            logger.debug("autotrace instrumentor: no patterns (%s is unset, and no "
                         "configuration file gives them); nothing is traced", ENV_PATTERNS)
            return
        current = active_installation()
        if current is not None:
            logger.debug("autotrace instrumentor: autotrace is already installed (%r); "
                         "leaving it as it is", current)
            return
        try:
            self._installation = install(tracer_provider=kwargs.get("tracer_provider"),
                                         **options)
        except (ValueError, TypeError, RuntimeError) as exc:
            logger.error("autotrace instrumentor: %s; nothing is traced", exc)
            return
        hook_main_script()
        # A server that dies by its re-raised SIGTERM (uvicorn) runs no exit handler.
        provider = kwargs.get("tracer_provider")
        before_signal_death(lambda: flush_providers(provider))
        if provider is None:
            atexit.register(_say_if_nothing_was_exported, self._installation)
        try:  # the parent's context, and TRACEPARENT for this process's children
            propagation.start(os.environ)
        except ValueError as exc:
            logger.error("autotrace instrumentor: %s; child processes start their own traces",
                         exc)

    def _uninstrument(self, **kwargs: Any) -> None:
        installation, self._installation = self._installation, None
        if installation is not None:
            installation.uninstall()


NOTHING_EXPORTED = (
    "autotrace: {count} functions were traced in this process, but no OpenTelemetry SDK "
    "tracer provider was ever set, so their spans went nowhere. opentelemetry-instrument "
    "sets one through a distro: pip install opentelemetry-distro (in the "
    "otel-autotrace[instrument] extra), with OTEL_TRACES_EXPORTER=console or otlp; or set "
    "one in the program (trace.set_tracer_provider)")


def _say_if_nothing_was_exported(installation: Installation | None) -> None:
    """At exit: one line if autotrace traced functions while no SDK provider ever existed
    (``opentelemetry-instrument`` without a distro configures nothing, silently)."""
    try:
        if installation is None or not installation.active or not installation.matched:
            return
        if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return  # nothing was asked for
        provider = trace.get_tracer_provider()
        if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            sys.stderr.write(NOTHING_EXPORTED.format(count=installation.matched) + "\n")
            sys.stderr.flush()
    except Exception:  # a closed stream at exit: nothing to say it on
        pass
