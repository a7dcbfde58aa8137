"""Backends decide *when* a traced call starts and ends; nothing else.

Each backend is built from a ``Selector`` (which names) and a ``Tracing``
(how spans open and close), and has two methods: ``start`` (instrument the
modules already imported and those imported later) and ``stop`` (undo all of
it). Attributes are never built here: that is the formatter's job.
"""

from __future__ import annotations

import sys
from typing import Protocol

from ..selection import Selector
from ..spans import Tracing


class Backend(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


def create_backend(name: str, selector: Selector, tracing: Tracing) -> Backend:
    """The backend called ``name`` (already resolved from ``auto``)."""
    if name == "wrapt":
        from .wrapt_backend import WraptBackend

        return WraptBackend(selector, tracing)
    if name == "monitoring":
        if sys.version_info < (3, 12):
            running = ".".join(str(part) for part in sys.version_info[:3])
            raise RuntimeError(
                "backend='monitoring' needs Python 3.12 or newer (sys.monitoring, PEP 669); "
                f"this is Python {running}. Use backend='wrapt', or backend='auto' to pick "
                "the best one available"
            )
        from .monitoring_backend import MonitoringBackend

        return MonitoringBackend(selector, tracing)
    raise ValueError(f"unknown backend {name!r}")
