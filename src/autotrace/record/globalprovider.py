"""Being told when the program sets OpenTelemetry's global tracer provider.

Until a provider exists there is nothing to record, and the cheapest traced
call is one that does no tracing work at all: wrappers pass straight through
and the monitoring backend sets no events. The API has no notification for
``set_tracer_provider``, so its internal ``_set_tracer_provider`` (through
which ``set_tracer_provider`` and the ``OTEL_PYTHON_TRACER_PROVIDER`` loader
both go) is wrapped once to tell the waiting installations. If that function
is missing (a different API version), ``watch`` says so and callers fall back
to checking on each call.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Protocol

from opentelemetry import trace

from .._log import log_once


class Watcher(Protocol):
    def global_provider_set(self) -> None: ...


_watchers: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()
_patched = False


def watch(watcher: Watcher) -> bool:
    """Call ``watcher.global_provider_set()`` once the global provider is set."""
    global _patched
    with _lock:
        if not _patched:
            original = getattr(trace, "_set_tracer_provider", None)
            if not callable(original):
                return False

            def _set_tracer_provider(*args: Any, **kwargs: Any) -> Any:
                result = original(*args, **kwargs)
                _notify()
                return result

            trace._set_tracer_provider = _set_tracer_provider
            _patched = True
        _watchers.add(watcher)
    return True


def _notify() -> None:
    with _lock:
        waiting = list(_watchers)
        _watchers.clear()
    for watcher in waiting:
        try:
            watcher.global_provider_set()
        except Exception:
            log_once("provider-set", "autotrace: could not start tracing with the new provider")
