"""Backends decide *when* a traced call starts and ends; nothing else.

Each backend is built from a ``Selector`` (which names) and a recorder ``Core``
(told when each call starts and ends; it decides what is kept), and has three
methods: ``start`` (instrument the modules already imported and those
imported later), ``stop`` (undo all of it), and ``compile_main`` (compile the
source of a module that is run rather than imported, ``python app.py`` or
``python -m pkg.mod``, so that the functions it defines are traced although no
import hook sees it run).
Attributes are never built here, and no backend imports OpenTelemetry.
"""

from __future__ import annotations

import sys
from types import CodeType
from typing import Protocol, Union

from ..record.contract import Core
from ..selection import Selector


class Backend(Protocol):
    name: str

    @property
    def matched(self) -> int:
        """How many functions (or code objects) were instrumented so far; cheap to read."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def compile_main(self, source: Union[str, bytes], filename: str, module: str) -> CodeType:
        """Compile a run (not imported) module so its functions are traced when it runs."""
        ...


def create_backend(name: str, selector: Selector, recorder: Core) -> Backend:
    """The backend called ``name`` (already resolved from ``auto``)."""
    if name == "wrapt":
        from .wrapt.backend import WraptBackend

        return WraptBackend(selector, recorder)
    if name == "monitoring":
        if sys.version_info < (3, 12):
            running = ".".join(str(part) for part in sys.version_info[:3])
            raise RuntimeError(
                "backend='monitoring' needs Python 3.12 or newer (sys.monitoring, PEP 669); "
                f"this is Python {running}. Use backend='wrapt', or backend='auto' to pick "
                "the best one available"
            )
        from .monitoring import MonitoringBackend

        return MonitoringBackend(selector, recorder)
    raise ValueError(f"unknown backend {name!r}")
