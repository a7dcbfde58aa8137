"""One trace across processes: the span current in a parent becomes the parent of a child's.

OpenTelemetry's carrier for a process is its environment: ``TRACEPARENT`` and
``TRACESTATE`` (upper case, W3C trace-context values). Under the ``autotrace``
command (and ``opentelemetry-instrument`` with autotrace's instrumentor):

* **A new process** gets them where its environment is built:
  ``subprocess.Popen`` (``run``, ``call``, ``check_output``, ...), ``os.execv``/
  ``os.execve`` (and so every ``os.exec*`` and the fork-based ``os.spawn*``),
  ``os.posix_spawn``/``os.posix_spawnp``, with or without an explicit ``env``.
  A ``TRACEPARENT`` the program put there itself (any value other than the
  one this process was started with) is left as it is. Nothing is added when
  no span is current, so untraced programs start their children unchanged.
* **The child**, if it runs the bootstrap, attaches the context those
  variables carry once, on its main thread, before the program starts
  (``adopt``): its root spans are children of the parent's span. Threads the
  child starts have contexts of their own (``contextvars`` are not inherited
  by threads), so their root spans start new traces, as in any process.
* **multiprocessing and concurrent.futures**: workers are long-lived and
  started before the tasks they run, so the context is captured per task, at
  submit (``Pool.apply_async``/``map``/``imap``/``starmap``...,
  ``ProcessPoolExecutor.submit``/``map``, ``Process.start``), travels with the
  pickled task as a small picklable wrapper (``InContext``) and is attached
  around the task in the worker, whatever the start method (fork, spawn,
  forkserver). In a worker process the spans are flushed when each task ends,
  before its result is sent back (a ``with Pool()`` block terminates its
  workers without any exit handler running, so spans left in the queue would
  be lost); that flush waits at most ``FLUSH_MILLIS`` and is skipped once an
  export has failed.

``OTEL_PYTHON_AUTOTRACE_PROPAGATE=false`` (``autotrace --no-propagate``)
turns all of this off: nothing is read, injected or wrapped.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Mapping
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .._log import log_once
from ..config import OPTIONS_BY_NAME, command_setting

ENV_PROPAGATE = OPTIONS_BY_NAME["propagate"].env
TRACEPARENT, TRACESTATE = "TRACEPARENT", "TRACESTATE"
#: Longest wait for the per-task flush in a worker process.
FLUSH_MILLIS = 2000

_PROPAGATOR = TraceContextTextMapPropagator()
_lock = threading.Lock()
_started = False
#: What this process was started with (replaced in children, kept if the program changed it).
_inherited: dict[str, str] = {}
_flushers: list[Callable[[int], Any]] = []


def enabled(environ: Mapping[str, str]) -> bool:
    return bool(command_setting("propagate", environ))


def start(environ: Mapping[str, str], flush: Callable[[int], Any] | None = None) -> bool:
    """Adopt the parent's context and hook process creation; False when turned off.

    ``flush(timeout_millis)`` is how a worker process pushes its spans out after
    a task (the provider's ``force_flush``); the global provider's is used too.
    Raises ``ValueError`` for a bad ``OTEL_PYTHON_AUTOTRACE_PROPAGATE``.
    """
    global _started
    if not enabled(environ):
        return False
    if flush is not None:
        _flushers.append(flush)
    with _lock:
        if _started:
            return True
        _started = True
    adopt(environ)
    try:
        _hook_processes()
        _hook_pools()
    except Exception:
        log_once("propagate-hook", "autotrace: could not hook process creation; child "
                 "processes start their own traces")
    return True


# -- the carrier ---------------------------------------------------------------------------

def carrier() -> dict[str, str]:
    """``TRACEPARENT``/``TRACESTATE`` for the current context; empty when there is none."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    found: dict[str, str] = {}
    _PROPAGATOR.inject(found)
    return {key.upper(): value for key, value in found.items()}


def context_from(values: Mapping[str, str]) -> otel_context.Context | None:
    """The context a carrier describes, or None if it holds no valid parent."""
    lower = {key.lower(): value for key, value in values.items()
             if key.upper() in (TRACEPARENT, TRACESTATE)}
    if not lower.get("traceparent"):
        return None
    ctx = _PROPAGATOR.extract(lower)
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


def adopt(environ: Mapping[str, str]) -> bool:
    """Attach the context of this process's ``TRACEPARENT`` (once, at start-up)."""
    for key in (TRACEPARENT, TRACESTATE):
        if environ.get(key):
            _inherited[key] = environ[key]
    ctx = context_from(environ)
    if ctx is None:
        if environ.get(TRACEPARENT):
            log_once("traceparent", "autotrace: ignoring TRACEPARENT=%r, which is not a W3C "
                     "traceparent (00-<32 hex>-<16 hex>-<2 hex>)", environ[TRACEPARENT],
                     exc_info=False)
        return False
    otel_context.attach(ctx)  # for the whole life of the main thread: never detached
    return True


def child_env(env: Mapping[Any, Any] | None) -> Mapping[Any, Any] | None:
    """``env`` (None: this process's) with the current context added; ``env`` itself when
    there is nothing to add or the program set its own ``TRACEPARENT``."""
    try:
        values = carrier()
        if not values:
            return env
        base: Mapping[Any, Any] = os.environ if env is None else env
        as_bytes = bool(base) and all(isinstance(key, bytes) for key in base)
        name = TRACEPARENT.encode() if as_bytes else TRACEPARENT
        given = base.get(name)
        if given:
            text = given.decode("ascii", "replace") if isinstance(given, bytes) else str(given)
            if text != _inherited.get(TRACEPARENT):
                return env  # the program's own: honoured
        out = dict(base)
        for key in (TRACEPARENT, TRACESTATE):
            out.pop(key.encode() if as_bytes else key, None)
            if key in values:
                out[key.encode() if as_bytes else key] = (
                    values[key].encode() if as_bytes else values[key])
        return out
    except Exception:
        log_once("propagate-env", "autotrace: could not add TRACEPARENT to a child's "
                 "environment; that child starts its own trace")
        return env


# -- process creation ----------------------------------------------------------------------

_ENV_POSITION = 10  # Popen(args, bufsize, executable, stdin, stdout, stderr, preexec_fn,
#                     close_fds, shell, cwd, env, ...): index in the arguments after self


def _hook_processes() -> None:
    _hook_os()
    after_import("subprocess", _hook_popen)


def _hook_popen(subprocess: ModuleType) -> None:
    popen_init = subprocess.Popen.__init__
    if getattr(popen_init, "_autotrace", False):
        return

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > _ENV_POSITION:
            args = (*args[:_ENV_POSITION], child_env(args[_ENV_POSITION]),
                    *args[_ENV_POSITION + 1:])
        else:
            kwargs["env"] = child_env(kwargs.get("env"))
        popen_init(self, *args, **kwargs)

    _mark(__init__, popen_init)
    subprocess.Popen.__init__ = __init__


def _hook_os() -> None:
    if getattr(os.execve, "_autotrace", False):
        return
    if hasattr(os, "execve"):
        execv, execve = os.execv, os.execve

        def _execv(path: Any, argv: Any) -> Any:
            env = child_env(None)
            if env is None:
                return execv(path, argv)
            return execve(path, argv, env)

        def _execve(path: Any, argv: Any, env: Any) -> Any:
            new_env: Any = child_env(env)
            return execve(path, argv, new_env)

        _mark(_execv, execv)
        _mark(_execve, execve)
        os.execv, os.execve = _execv, _execve
    for name in ("posix_spawn", "posix_spawnp"):
        original = getattr(os, name, None)
        if original is not None:
            setattr(os, name, _mark(_spawner(original), original))


def _spawner(original: Callable[..., Any]) -> Callable[..., Any]:
    def spawn(path: Any, argv: Any, env: Any, *args: Any, **kwargs: Any) -> Any:
        return original(path, argv, child_env(env), *args, **kwargs)
    return spawn


def _mark(wrapper: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    for attribute in ("__name__", "__qualname__", "__doc__", "__module__"):
        try:
            setattr(wrapper, attribute, getattr(original, attribute))
        except (AttributeError, TypeError):
            pass
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    wrapper._autotrace = True  # type: ignore[attr-defined]
    return wrapper


# -- tasks ---------------------------------------------------------------------------------

class InContext:
    """A task (``fn``) that runs under the context it was submitted in; pickles by value."""

    __slots__ = ("carrier", "fn", "pid")

    def __init__(self, fn: Callable[..., Any], values: dict[str, str]) -> None:
        self.fn = fn
        self.carrier = values
        self.pid = os.getpid()

    def __getstate__(self) -> tuple[Any, dict[str, str], int]:
        return self.fn, self.carrier, self.pid

    def __setstate__(self, state: tuple[Any, dict[str, str], int]) -> None:
        self.fn, self.carrier, self.pid = state

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        token = _attach(self.carrier)
        try:
            return self.fn(*args, **kwargs)
        finally:
            if token is not None:
                _detach(token)
            if os.getpid() != self.pid:
                flush()

    def __repr__(self) -> str:
        return f"{self.fn!r}"


def in_context(fn: Any) -> Any:
    """``fn`` wrapped to run under the current context, or ``fn`` when there is none."""
    try:
        if fn is None or isinstance(fn, InContext):
            return fn
        values = carrier()
        return InContext(fn, values) if values else fn
    except Exception:
        log_once("propagate-task", "autotrace: could not capture the context of a task; it "
                 "runs in its own trace")
        return fn


def _attach(values: Mapping[str, str]) -> object | None:
    try:
        ctx = context_from(values)
        return None if ctx is None else otel_context.attach(ctx)
    except Exception:
        log_once("propagate-attach", "autotrace: could not restore a task's context")
        return None


def _detach(token: Any) -> None:
    try:
        otel_context.detach(token)
    except Exception:
        log_once("propagate-detach", "autotrace: could not detach a task's context")


def flush() -> None:
    """Push this process's spans out (bounded); skipped once an export has failed."""
    try:
        from .exporters import _failing

        if _failing.is_set():
            return
        flushers = list(_flushers)
        provider = trace.get_tracer_provider()
        global_flush = getattr(provider, "force_flush", None)
        if global_flush is not None and global_flush not in flushers:
            flushers.append(global_flush)
        for one in flushers:
            one(FLUSH_MILLIS)
    except Exception:
        log_once("propagate-flush", "autotrace: could not flush a worker's spans")


def _hook_pools() -> None:
    after_import("multiprocessing.pool", _hook_pool)
    after_import("concurrent.futures.process", _hook_executor)
    after_import("multiprocessing.process", _hook_process)


def _hook_pool(pool: ModuleType) -> None:
    Pool = pool.Pool
    if getattr(Pool.apply_async, "_autotrace", False):
        return
    apply_async, map_async = Pool.apply_async, Pool._map_async  # type: ignore[attr-defined]
    imap, imap_unordered = Pool.imap, Pool.imap_unordered

    def _apply_async(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
        return apply_async(self, in_context(func), *args, **kwargs)

    def _map_async(self: Any, func: Any, iterable: Any, mapper: Any, *args: Any,
                   **kwargs: Any) -> Any:  # one wrapper per chunk, around mapstar/starmapstar
        return map_async(self, func, iterable, in_context(mapper), *args, **kwargs)

    def _imap(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
        return imap(self, in_context(func), *args, **kwargs)

    def _imap_unordered(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
        return imap_unordered(self, in_context(func), *args, **kwargs)

    Pool.apply_async = _mark(_apply_async, apply_async)  # type: ignore[method-assign]
    Pool._map_async = _mark(_map_async, map_async)  # type: ignore[attr-defined]
    Pool.imap = _mark(_imap, imap)  # type: ignore[method-assign]
    Pool.imap_unordered = _mark(_imap_unordered, imap_unordered)


def _hook_executor(futures_process: ModuleType) -> None:
    Executor = futures_process.ProcessPoolExecutor
    submit = Executor.submit
    if getattr(submit, "_autotrace", False):
        return

    def _submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return submit(self, in_context(fn), *args, **kwargs)

    Executor.submit = _mark(_submit, submit)


def _hook_process(process: ModuleType) -> None:
    BaseProcess = process.BaseProcess
    start_process, bootstrap = BaseProcess.start, BaseProcess._bootstrap
    if getattr(start_process, "_autotrace", False):
        return

    def _start(self: Any) -> None:
        try:
            values = carrier()
            if values:
                self._autotrace_carrier = values
        except Exception:
            log_once("propagate-process", "autotrace: could not capture a Process's context")
        start_process(self)

    def _bootstrap(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _attach(getattr(self, "_autotrace_carrier", None) or {})
        try:
            return bootstrap(self, *args, **kwargs)
        finally:
            if token is not None:
                _detach(token)
            flush()  # a fork child leaves through os._exit: no exit handler runs

    BaseProcess.start = _mark(_start, start_process)
    BaseProcess._bootstrap = _mark(_bootstrap, bootstrap)


# -- hooking a module once it is imported (importing them all at start-up costs 10-30 ms) --

_pending: dict[str, Callable[[ModuleType], None]] = {}


def after_import(name: str, hook: Callable[[ModuleType], None]) -> None:
    """Run ``hook(module)`` now if ``name`` is imported, else right after its import."""
    module = sys.modules.get(name)
    if module is not None:
        _run_hook(name, hook, module)
        return
    _pending[name] = hook
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def _run_hook(name: str, hook: Callable[[ModuleType], None], module: ModuleType) -> None:
    try:
        hook(module)
    except Exception:
        log_once(f"propagate-hook-{name}", "autotrace: could not hook %s; processes it starts "
                 "start their own traces", name)


class _HookedLoader(importlib.abc.Loader):
    """The module's own loader, then the hook."""

    def __init__(self, loader: Any, name: str, hook: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self._name = name
        self._hook = hook

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        try:  # the module's own loader in its place, as if never wrapped
            module.__loader__ = self._loader
            if module.__spec__ is not None:
                module.__spec__.loader = self._loader
        except Exception:
            pass
        self._loader.exec_module(module)
        _run_hook(self._name, self._hook, module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of the few modules with a pending hook."""

    def __init__(self) -> None:
        self._busy = threading.local()

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> ModuleSpec | None:
        hook = _pending.get(fullname)
        if hook is None or getattr(self._busy, "name", None) == fullname:
            return None
        self._busy.name = fullname
        try:
            spec = importlib.util.find_spec(fullname)
        except Exception:
            return None
        finally:
            self._busy.name = None
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        _pending.pop(fullname, None)
        spec.loader = _HookedLoader(spec.loader, fullname, hook)
        return spec


_FINDER = _PostImportFinder()


__all__ = ["ENV_PROPAGATE", "InContext", "adopt", "carrier", "child_env", "in_context",
           "start"]
