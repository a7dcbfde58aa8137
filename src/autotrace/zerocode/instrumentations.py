"""The installed OpenTelemetry instrumentations, loaded by the ``autotrace`` command's bootstrap.

``opentelemetry-instrument`` runs, in each process, the distro's ``configure()``,
the ``opentelemetry_configurator`` entry points (which set a global SDK provider
with the exporters of the ``OTEL_*`` variables) and every
``opentelemetry_instrumentor`` entry point not named in
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` whose library is installed at a
supported version (``opentelemetry_auto_instrumentation/_load.py``). The command
does the same, so that a request span exists for ``--require-parent`` and the
functions' spans sit in their request's trace; ``OTEL_PYTHON_AUTOTRACE_INSTRUMENTATIONS``
says how much:

* ``on`` (default): the instrumentors, through the distro's ``load_instrumentor``,
  with autotrace's own provider (``provider.FallbackTracerProvider``): their spans
  go where autotrace's go (``--exporter``, the call tree, the trace file; or the
  program's own provider once it sets one). The distro's configurator is not run:
  the command's provider is the configuration, so ``--exporter`` keeps its meaning.
* ``distro``: exactly what ``opentelemetry-instrument`` does, the distro's
  ``configure()`` and configurator too; autotrace's spans then go to the global
  provider that configurator sets (its exporters, its defaults: OTLP/gRPC with
  ``opentelemetry-distro``).
* ``off``: nothing.

An instrumentation named after a library the process has not imported yet
(``flask``, ``django``, ``starlette``: most are) is loaded when the program imports
that library, right after its body has run (``OnImport``): loading one imports its
library, and a process that never uses Flask (a ``python -c`` child, a tool) should
not pay for it. A failure is logged once and leaves the process as it was: the
program runs.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from types import ModuleType
from typing import Any, Callable

from .._log import log_once, logger
from ..config import command_setting
from ..loading.importhook import ProxyLoader
from . import BOOTSTRAP_DIR

DISABLED = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
#: autotrace's own instrumentor: the bootstrap has installed autotrace already.
OWN_ENTRY_POINT = "autotrace"


def load(environ: dict[str, str] | os._Environ[str], tracer_provider: Any,
         meter_provider: Any = None) -> list[str]:
    """Load the instrumentations as ``OTEL_PYTHON_AUTOTRACE_INSTRUMENTATIONS`` says; the
    names of those instrumented (or to be, when their library is imported). Never raises.

    Start-up imports only ``importlib.metadata`` for the entry points: the distro, the
    dependency checks (``packaging``) and the instrumentations themselves (wrapt) are
    imported when the first instrumentation loads."""
    mode = command_setting("instrumentations", environ)
    if mode == "off":
        return []
    # As opentelemetry-instrument: children started while instrumentations load (at import
    # time of some library) must not load them again, recursively.
    saved = environ.get("PYTHONPATH")
    if saved is not None:
        environ["PYTHONPATH"] = os.pathsep.join(
            entry for entry in saved.split(os.pathsep)
            if entry and os.path.abspath(entry) != BOOTSTRAP_DIR)
    try:
        if importlib.util.find_spec("opentelemetry.instrumentation") is None:
            return []  # opentelemetry-instrumentation not installed: nothing to load
        kwargs: dict[str, Any] = {}
        loader = _Loader(kwargs)
        if mode == "distro":
            from opentelemetry.instrumentation.auto_instrumentation import _load

            loader.distro().configure()
            _load._load_configurators()  # type: ignore[no-untyped-call]
        else:
            if tracer_provider is not None:
                kwargs["tracer_provider"] = tracer_provider
            if meter_provider is not None:
                kwargs["meter_provider"] = meter_provider
        return _load_instrumentors(loader, environ)
    except Exception:
        log_once("instrumentations", "autotrace: could not load the OpenTelemetry "
                 "instrumentations; the program runs with autotrace's spans only")
        return []
    finally:
        if saved is not None:
            environ["PYTHONPATH"] = saved


class _Loader:
    """Loads one instrumentation as ``opentelemetry-instrument`` does: skipped if its
    library is missing or at an unsupported version, else through the distro's
    ``load_instrumentor`` with ``kwargs``; the distro is found at the first use."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self._kwargs = kwargs
        self._distro: Any = None

    def distro(self) -> Any:
        if self._distro is None:
            from opentelemetry.instrumentation.auto_instrumentation import _load

            self._distro = _load._load_distro()
        return self._distro

    def instrument(self, entry_point: Any) -> bool:
        try:
            from opentelemetry.instrumentation.dependencies import (
                get_dist_dependency_conflicts,
            )

            dist = getattr(entry_point, "dist", None)
            conflict = get_dist_dependency_conflicts(dist) if dist is not None else None
            if conflict:  # its library is not installed, or at another version
                logger.debug("autotrace: instrumentation %s skipped: %s", entry_point.name,
                             conflict)
                return False
            self.distro().load_instrumentor(entry_point, skip_dep_check=dist is not None,
                                            **self._kwargs)
            return True
        except ModuleNotFoundError as exc:  # as opentelemetry-instrument: not an error
            logger.debug("autotrace: instrumentation %s skipped: %s", entry_point.name, exc)
        except Exception:  # one broken instrumentation must not stop the others
            log_once(f"instrumentation:{entry_point.name}",
                     "autotrace: the OpenTelemetry instrumentation %r failed to load; "
                     "skipped", entry_point.name)
        return False


def _load_instrumentors(loader: _Loader, environ: Any) -> list[str]:
    """``_load._load_instrumentors``, each instrumentation named after a library not
    imported yet loaded when it is."""
    from importlib.metadata import entry_points

    disabled = {name.strip() for name in environ.get(DISABLED, "").split(",")}
    for entry_point in entry_points(group="opentelemetry_pre_instrument"):
        entry_point.load()()
    loaded: list[str] = []
    if "*" not in disabled:
        deferred: dict[str, list[Any]] = {}
        for entry_point in entry_points(group="opentelemetry_instrumentor"):
            if entry_point.name in disabled or entry_point.name == OWN_ENTRY_POINT:
                continue
            if _importable_later(entry_point.name):
                deferred.setdefault(entry_point.name, []).append(entry_point)
            elif loader.instrument(entry_point):
                loaded.append(entry_point.name)
        if deferred:
            OnImport(deferred, loader.instrument).install()
            loaded.extend(f"{name} (when imported)" for name in deferred)
    for entry_point in entry_points(group="opentelemetry_post_instrument"):
        entry_point.load()()
    return loaded


def _importable_later(name: str) -> bool:
    """Whether ``name`` is a top-level module that is importable but not imported yet:
    most instrumentations are named after their library (``flask``, ``django``), and
    loading one imports it (~100 ms each), so it waits until the program imports it."""
    if not name.isidentifier() or name in sys.modules:
        return False
    try:
        return importlib.util.find_spec(name) is not None
    except Exception:
        return False


class _Guard(threading.local):
    finding = False


class OnImport:
    """A ``sys.meta_path`` finder that loads the instrumentations of a module right after
    the module's body has run (before the importer gets it), then steps aside.

    As ``autotrace.loading.importhook``: the real spec comes from the other finders,
    only ``spec.loader`` is replaced (by a proxy that forwards everything), the
    module gets its real loader back before its body runs."""

    def __init__(self, pending: dict[str, list[Any]], instrument: Callable[[Any], Any]) -> None:
        self._pending = pending
        self._instrument = instrument
        self._lock = threading.Lock()
        self._guard = _Guard()

    def install(self) -> None:
        sys.meta_path.insert(0, self)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in self._pending or self._guard.finding:
            return None
        self._guard.finding = True
        try:
            for finder in list(sys.meta_path):
                find = getattr(finder, "find_spec", None)
                if finder is self or find is None:
                    continue
                spec = find(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
            if spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return None
            spec.loader = _InstrumentingLoader(spec.loader, self)
            return spec
        except Exception:  # the import goes on as if this finder were not there
            return None
        finally:
            self._guard.finding = False

    def imported(self, name: str) -> None:
        with self._lock:
            entry_points = self._pending.pop(name, [])
            if not self._pending and self in sys.meta_path:
                sys.meta_path.remove(self)
        for entry_point in entry_points:
            self._instrument(entry_point)


class _InstrumentingLoader(ProxyLoader):
    _autotrace_finder: OnImport

    def exec_module(self, module: ModuleType) -> None:
        loader = self._hand_back(module)
        loader.exec_module(module)
        try:
            self._autotrace_finder.imported(module.__name__)
        except Exception:
            log_once("instrument-on-import", "autotrace: loading the OpenTelemetry "
                     "instrumentation of %r failed", module.__name__)
