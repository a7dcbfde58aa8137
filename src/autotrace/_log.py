"""Logging for autotrace's own faults: each distinct fault is reported once.

autotrace must never break the host program, so internal failures are caught
and logged; logging them once keeps a fault that repeats on every call from
flooding the program's logs.
"""

from __future__ import annotations

import logging
import sys
import threading

logger = logging.getLogger("autotrace")

_seen: set[str] = set()
#: Reentrant: a finaliser or signal handler may log while this thread is in here.
_lock = threading.RLock()


def log_once(key: str, message: str, *args: object, exc_info: bool = True) -> None:
    """Log ``message`` at WARNING the first time ``key`` is seen, DEBUG afterwards; with
    the exception being handled, if any (never a stray ``NoneType: None`` line)."""
    if exc_info and sys.exc_info()[0] is None:
        exc_info = False
    with _lock:
        first = key not in _seen
        _seen.add(key)
    try:
        if first:
            logger.warning(message, *args, exc_info=exc_info)
        else:
            logger.debug(message, *args, exc_info=exc_info)
    except Exception:
        # Logging must not become the fault: a handler formatting a traceback that
        # holds a hostile user exception can raise, and that would replace the
        # exception the user's code is raising.
        pass
