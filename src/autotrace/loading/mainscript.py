"""Running the main script (``python app.py``) through the active backend.

The interpreter compiles and runs a script itself, so no import hook sees its
code. The one place where Python code runs after ``__main__``, ``sys.argv``
and ``sys.path[0]`` are set up and before the script's first line is the
``cpython.run_file`` audit event. A hook registered from ``sitecustomize``
(or by the OpenTelemetry instrumentor) takes the run over there: it compiles
the script through the installed import hook (``importhook.installed()``, which
knows the selector and the backend's compiler) and runs it in the real
``__main__`` namespace, as the interpreter would, then ends the process the
way the interpreter would have (``SystemExit`` status, a traceback through
``sys.excepthook`` and status 1, or death by SIGINT after an uncaught
``KeyboardInterrupt``). This covers every Python process that loads the
bootstrap, children included, whatever interpreter options they use.

Nothing is taken over (the interpreter runs the script itself, untraced by
the wrapt backend) when autotrace is not installed, the patterns cannot
select the script, the file is not Python source, it does not compile, or
``python -i`` is used.
"""

from __future__ import annotations

import atexit
import io
import os
import signal
import sys
import threading
from importlib.machinery import SourceFileLoader
from importlib.util import MAGIC_NUMBER
from types import CodeType, TracebackType
from typing import Any

from .._log import log_once, logger
from . import importhook

_lock = threading.Lock()
_registered = False
_taken = False
_interrupted = False


def hook_main_script() -> None:
    """Trace the functions of the script this process is about to run (idempotent).

    Audit hooks cannot be removed, and a Python one costs every audited call for
    the whole run (~0.4 us each: ``sys._getframe``, which the monitoring backend
    calls at every event, ``open``, ``compile`` ...), so none is added when the
    interpreter is not about to run a file: ``sys.argv`` is already set when
    ``sitecustomize`` runs, and is ``-m``, ``-c``, ``-`` or empty otherwise.
    """
    global _registered
    if not _runs_a_file():
        return
    with _lock:
        if _registered:
            return
        _registered = True
    try:
        atexit.register(_exit_by_sigint)
        sys.addaudithook(_audit)
    except Exception:
        log_once("audithook", "autotrace: cannot watch for the main script; functions it "
                 "defines are not traced by the wrapt backend")


def _runs_a_file() -> bool:
    """Whether the interpreter may yet run a script file (``cpython.run_file``)."""
    argv = getattr(sys, "argv", None)
    if not argv:
        return True  # unknown: be safe
    return argv[0] not in ("", "-c", "-m", "-")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    global _taken
    if event != "cpython.run_file" or _taken:
        return
    _taken = True
    try:
        code = _prepare(os.fspath(args[0]))
    except Exception:
        log_once("prepare-main", "autotrace: could not prepare the main script; it runs "
                 "untraced")
        return
    if code is not None:
        _run(code)


# Audit hooks run with tracing paused unless they carry ``__cantrace__``;
# the whole program runs inside this one, so debuggers, coverage and
# sys.monitoring must keep working in it.
_audit.__cantrace__ = True  # type: ignore[attr-defined]


def _prepare(filename: str) -> CodeType | None:
    """The script compiled through the backend, or None to let the interpreter run it."""
    hook = importhook.installed()
    if hook is None or sys.flags.inspect or not hook.may_trace_script(filename):
        return None
    with io.open_code(filename) as stream:
        source = stream.read()
    if source[:len(MAGIC_NUMBER)] == MAGIC_NUMBER:
        return None  # a .pyc: the interpreter runs it itself
    try:
        return hook.compile_script(source, filename)
    except (SyntaxError, ValueError):
        return None  # reported by the interpreter, in its own words


def _run(code: CodeType) -> None:
    """Run ``code`` as ``__main__``; always ends with an exception that ends the process."""
    global _interrupted
    filename = code.co_filename
    namespace = sys.modules["__main__"].__dict__
    namespace["__file__"] = filename
    if sys.version_info < (3, 15):  # 3.15 no longer sets ``__cached__`` on any module
        namespace["__cached__"] = None
    if namespace.get("__loader__") is None or not isinstance(namespace["__loader__"],
                                                             SourceFileLoader):
        namespace["__loader__"] = SourceFileLoader("__main__", filename)
    try:
        exec(code, namespace)
    except SystemExit:
        raise  # like the interpreter, which exits at once and keeps __file__
    except KeyboardInterrupt as exc:
        _report(exc, code)
        _forget_file(namespace)
        _interrupted = True
        raise SystemExit(130) from None
    except BaseException as exc:
        _report(exc, code)
        _forget_file(namespace)
        raise SystemExit(1) from None
    _forget_file(namespace)
    raise SystemExit(0)


def _forget_file(namespace: dict[str, Any]) -> None:
    """What the interpreter does once a script has run (its exit handlers see this)."""
    namespace.pop("__file__", None)
    namespace.pop("__cached__", None)


def _report(exc: BaseException, code: CodeType) -> None:
    """Print an uncaught exception like the interpreter: via ``sys.excepthook``,
    starting at the script's frame."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code is not code:
        tb = tb.tb_next
    if tb is not None:
        exc.__traceback__ = tb
    try:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    except Exception:
        sys.__excepthook__(type(exc), exc, exc.__traceback__)


def _exit_by_sigint() -> None:
    """After the other exit handlers: die of SIGINT, as CPython does on an
    uncaught ``KeyboardInterrupt`` (registered first, so it runs last)."""
    if not _interrupted or not hasattr(signal, "SIGINT") or os.name != "posix":
        return
    try:
        from opentelemetry import trace

        flush = getattr(trace.get_tracer_provider(), "force_flush", None)
        if flush is not None:
            flush()
    except Exception:
        logger.debug("autotrace: flush before SIGINT exit failed", exc_info=True)
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
