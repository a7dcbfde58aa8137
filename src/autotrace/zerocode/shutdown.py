"""Spans flushed by a process that shuts down gracefully, then dies by the signal it was sent.

uvicorn (and servers like it) catch SIGTERM, shut down gracefully, then restore
the default handler and ``signal.raise_signal(SIGTERM)`` so that the exit status
says "killed by SIGTERM". That death runs no exit handler, so the spans still in
the batch queue (up to 5 s of them) would be lost. ``hook()`` wraps
``signal.raise_signal``: when the signal raised would kill the process (its
handler is the default one, and its default action is to terminate), the
callbacks (the providers' flush, bounded by the export timeout) run first, once;
then the signal is raised as the program asked. Nothing else about signals
changes: no handler is installed, and a process killed from outside dies as
before (a server that exits normally flushes at exit anyway).
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable

from .._log import log_once

_TERMINATING = frozenset(getattr(signal, name) for name in
                         ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT") if hasattr(signal, name))
_callbacks: list[Callable[[], Any]] = []
_lock = threading.Lock()
_original: Callable[[int], None] | None = None
_ran = False


def before_signal_death(callback: Callable[[], Any]) -> None:
    """Run ``callback`` before the process raises a signal that kills it (see above)."""
    global _original
    with _lock:
        _callbacks.append(callback)
        if _original is None and hasattr(signal, "raise_signal"):
            _original = signal.raise_signal
            signal.raise_signal = _raise_signal


def _raise_signal(signalnum: int, /) -> None:
    global _ran
    try:
        with _lock:
            run = (not _ran and signalnum in _TERMINATING
                   and signal.getsignal(signalnum) == signal.SIG_DFL)
            if run:
                _ran = True
        if run:
            for callback in list(_callbacks):
                try:
                    callback()
                except Exception:
                    log_once("signal-flush", "autotrace: flushing spans before the process "
                             "dies by a signal failed")
    finally:
        assert _original is not None
        _original(signalnum)
