"""The sys.monitoring backend (PEP 669, Python 3.12+): spans from interpreter events.

Nothing is wrapped. Code objects of matching functions get *local* events
(PY_START, PY_RETURN and, for generators and coroutines, PY_YIELD and
PY_RESUME), so code that does not match runs at full speed. PY_UNWIND and
PY_THROW can be local from 3.15 on (gh-142186) and are set with the others;
before, they are global and filtered by an identity lookup of the code object
(a global PY_UNWIND costs every unwinding frame of the process). Because
selection is by code object, this backend also reaches what wrappers cannot:
closures and nested functions, functions of the ``__main__`` script, and
references taken before ``install()``.

Open calls live in one process-wide table keyed by frame identity (frames
cannot be weak-referenced; a thread-local table would lose a generator resumed
on another thread). The compiled callbacks key it by the interpreter frame's
address and make a frame object only when something reads it (a kept call's
arguments, a generator's sentinel). A generator or coroutine detaches its span's context at
PY_YIELD and re-attaches it at PY_RESUME/PY_THROW, so the span is current only
while its body runs. CPython 3.13.0 sends no event when a suspended generator
without exception handlers is closed or collected (gh-140373), and no version
sends events while a callback runs (a generator collected during an export); a
sentinel kept in the frame's ``f_trace`` ends such spans when the frame is released.

Callbacks never let an exception reach user code and never return DISABLE
from a global event.
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
from collections.abc import MutableMapping
from types import CodeType, FrameType, FunctionType, ModuleType
from typing import Any, Tuple

from .._log import log_once
from ..describe.function import FunctionInfo, code_of
from ..errors import InstallError
from ..loading.importhook import ImportHook
from ..loading.source import compile_source
from ..record import accel
from ..record.contract import ABANDONED, RAISED, RETURNED, Core
from ..selection import Selector, codes_opted_out, is_opted_out_code, opted_out_code_ids
from ..selection.discovery import iter_targets, modules_to_scan
from ..selection.names import module_name
from ..selection.names import untraced_dunder as _untraced_dunder

if sys.version_info >= (3, 12):
    _monitoring = sys.monitoring
    _events = _monitoring.events
    _PY_START = _events.PY_START
    _PY_RETURN = _events.PY_RETURN
    _PY_YIELD = _events.PY_YIELD
    _PY_RESUME = _events.PY_RESUME
    _PY_THROW = _events.PY_THROW
    _PY_UNWIND = _events.PY_UNWIND
    if sys.version_info >= (3, 15):  # exception events may be local (gh-142186)
        _GLOBAL_EVENTS = 0
        _LOCAL_CALL, _LOCAL_SUSPEND = _PY_UNWIND, _PY_THROW
    else:
        _GLOBAL_EVENTS = _PY_UNWIND | _PY_THROW
        _LOCAL_CALL = _LOCAL_SUSPEND = 0
    #: The local events of a traced code object; generators and coroutines add theirs.
    _CALL_EVENTS = _PY_START | _PY_RETURN | _LOCAL_CALL
    _SUSPEND_EVENTS = _PY_YIELD | _PY_RESUME | _LOCAL_SUSPEND

#: Tried in order: 3 and 4 are used by no tool by convention; 5 (optimizers),
#: 1 (coverage), 2 (profilers) and 0 (debuggers) only if nothing else is free.
TOOL_IDS = (3, 4, 5, 1, 2, 0)
TOOL_NAME = "autotrace"

_CO_SUSPENDS = 0x20 | 0x80 | 0x200  # CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR
_CO_OPTIMIZED = inspect.CO_OPTIMIZED
_SKIPPED_NAMES = frozenset({"<module>", "<lambda>", "<genexpr>", "<listcomp>", "<dictcomp>",
                            "<setcomp>"})
_get_frame = sys._getframe


#: One running (or suspended) traced frame: its call and its code (a tuple: cheap).
_Running = Tuple[Any, CodeType]  # (the core's call handle, its code)


class _FrameSentinel:
    """Lives in a suspending frame's ``f_trace``; ends its span when the frame goes."""

    __slots__ = ("backend", "key")

    def __init__(self, backend: MonitoringBackend, key: int) -> None:
        self.backend = backend
        self.key = key

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        return None  # only ever called if a legacy tracer starts later

    def __del__(self) -> None:
        self.backend._frame_released(self.key)


class MonitoringBackend:
    name = "monitoring"

    def __init__(self, selector: Selector, recorder: Core) -> None:
        self._selector = selector
        self._recorder = recorder
        #: The selected code objects by id (the compiled callbacks' table too), the name
        #: of each one's module, and its description once its first call made it. Plain
        #: dicts, no object per code: this is filled once per def as a module is imported.
        self._traced: dict[int, CodeType] = {}
        self._modules: dict[int, str] = {}
        self._infos: dict[int, FunctionInfo] = {}
        #: id(frame) -> (call, code); the compiled callbacks' own table when they run.
        self._calls: MutableMapping[int, _Running] = {}
        self._lock = threading.RLock()
        self._tool: int | None = None
        self._hook = ImportHook(selector, self.instrument, self.compile_main,
                                 adopt_code=self.adopt_main)
        #: Code objects registered so far (never decreases): "did the patterns match".
        self.matched = 0
        #: ``register_plain`` of ``_monitoring.c`` where the compiled core runs, or None.
        self._register_plain: Any = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        tool = self._claim_tool_id()
        if tool is None:
            taken = {i: _monitoring.get_tool(i) for i in range(6)}
            raise InstallError(
                "backend='monitoring' needs a free sys.monitoring tool id, but all are taken "
                f"({taken}); use backend='wrapt' or stop one of those tools"
            )
        self._tool = tool
        register = _monitoring.register_callback
        compiled = self._recorder.compiled_callbacks(self, self._traced)
        if compiled is not None:
            # keyed by interpreter frame address in C (no frame object made per call):
            # every callback is then C's, and the Python ones below run on the pure core
            self._calls = compiled.calls
            if accel.extension is not None:
                self._register_plain = accel.extension.register_plain
        register(tool, _PY_START, self._on_start if compiled is None else compiled.on_start)
        register(tool, _PY_RETURN, self._on_return if compiled is None else compiled.on_return)
        register(tool, _PY_YIELD, self._on_yield if compiled is None else compiled.on_yield)
        register(tool, _PY_RESUME, self._on_resume if compiled is None else compiled.on_resume)
        register(tool, _PY_THROW, self._on_throw if compiled is None else compiled.on_throw)
        register(tool, _PY_UNWIND, self._on_unwind if compiled is None else compiled.on_unwind)
        if not self._recorder.dormant and _GLOBAL_EVENTS:
            _monitoring.set_events(tool, _GLOBAL_EVENTS)
        self._recorder.on_ready(self._wake)
        for module in modules_to_scan(self._selector):
            self._hook.imported(module)
        self._instrument_running_modules()
        self._hook.install()

    def stop(self) -> None:
        self._hook.uninstall()
        tool = self._tool
        if tool is None:
            return
        self._tool = None
        with self._lock:
            traced = list(self._traced.values())
            self._traced.clear()
            self._modules.clear()
            self._infos.clear()
        for code in traced:
            try:
                _monitoring.set_local_events(tool, code, 0)
            except Exception:
                pass
        _monitoring.set_events(tool, 0)
        for event in (_PY_START, _PY_RETURN, _PY_YIELD, _PY_RESUME, _PY_THROW, _PY_UNWIND):
            _monitoring.register_callback(tool, event, None)
        _monitoring.free_tool_id(tool)
        # Spans still open (calls in flight, suspended generators) are ended now;
        # their contexts cannot be detached from here and are left to unwind.
        calls = list(self._calls.values())  # the table is shared with compiled callbacks
        self._calls.clear()
        for running in calls:
            try:
                self._recorder.finish(running[0], ABANDONED, None)
            except Exception:
                pass

    def _claim_tool_id(self) -> int | None:
        for tool in TOOL_IDS:
            if _monitoring.get_tool(tool) is None:
                try:
                    _monitoring.use_tool_id(tool, TOOL_NAME)
                except ValueError:
                    continue  # taken by a racing thread
                return tool
        return None

    # -- selecting code objects --------------------------------------------------------

    def instrument(self, module: ModuleType) -> None:
        """Register the code of every function ``module`` defines that the patterns select."""
        name = module_name(module)
        codes: list[CodeType] = []
        plain: list[FunctionType] = []
        items = self._register_compiled(module, name)
        for target in iter_targets(module, self._selector, plain, items):
            for func in target.functions:
                code = _original_code(func)
                if code is not None:
                    self._select_tree(code, name, True, codes)
        check_codes = codes_opted_out()
        for func in plain:  # most of a module: _original_code and _select_tree, inline
            code = func.__code__
            if getattr(func, "__wrapped__", None) is not None:
                code = _original_code(func)
            elif not (code.co_name in _SKIPPED_NAMES
                      or (check_codes and is_opted_out_code(code))):
                for const in code.co_consts:  # _holds_code, inline
                    if type(const) is CodeType:
                        break
                else:
                    codes.append(code)
                    continue
            if code is not None:
                self._select_tree(code, name, True, codes)
        self._register(codes, name)  # one lock for the module: this runs once per def

    def _register_compiled(self, module: ModuleType, name: str) -> list[tuple[str, Any]] | None:
        """Register the module's plain top-level functions in C (``_monitoring.c``), when
        the compiled core runs and every name of the module is selected. The namespace
        entries left for the Python loops; None: none registered, the loops see the
        whole namespace."""
        register = self._register_plain
        tool = self._tool
        if register is None or tool is None or not self._selector.whole(name):
            return None
        try:
            namespace = vars(module)
            real = module.__name__
            if type(real) is not str:
                return None
            dormant = self._recorder.dormant
            set_events = None if dormant else _monitoring.set_local_events
            # no lock around it: its stores run no Python code (see _monitoring.c)
            rest, added, failed = register(namespace, real, name, self._traced,
                                           self._modules, opted_out_code_ids(), set_events,
                                           tool, _CALL_EVENTS)
            with self._lock:
                self.matched += len(added)
        except Exception:
            log_once("monitoring:register_plain", "autotrace: the compiled registration of "
                     "%s failed; its functions are registered in Python", name, exc_info=True)
            return None
        if dormant and not self._recorder.dormant:
            failed = added  # woken meanwhile: _wake may have copied the table before them
        for code in failed:
            self._watch(tool, code)  # (tries again; logs a refusal)
        return rest  # type: ignore[no-any-return]

    def compile_main(self, source: str | bytes, filename: str, module: str) -> CodeType:
        """Compile a run module and register every matching function it can define."""
        code = compile_source(source, filename, module)
        self.adopt_main(code, module)
        return code

    def adopt_main(self, code: CodeType, module: str) -> None:
        """Register the matching functions of a run module's code, however it was made
        (``-m`` with a loader that makes its own code)."""
        name = module
        if module == "__main__":
            name = os.path.splitext(os.path.basename(code.co_filename))[0]
        self._register(self._select_tree(code, name, False, []), name)

    def _instrument_running_modules(self) -> None:
        """Modules still executing their body (``install()`` called from a script or
        a package ``__init__``): register the functions they have yet to define."""
        frame: FrameType | None = _get_frame(1)
        while frame is not None:
            if frame.f_code.co_name == "<module>":
                real = frame.f_globals.get("__name__")
                module = sys.modules.get(real) if isinstance(real, str) else None
                if module is not None:
                    name = module_name(module)
                    self._register(self._select_tree(frame.f_code, name, False, []), name)
            frame = frame.f_back

    def _select_tree(self, code: CodeType, module: str, selected: bool,
                     into: list[CodeType]) -> list[CodeType]:
        """Add ``code`` (if ``selected`` or matching) and its matching nested code to
        ``into``; returns it."""
        for nested in _walk(code):
            if nested.co_name in _SKIPPED_NAMES or not nested.co_flags & _CO_OPTIMIZED:
                continue
            if _untraced_dunder(nested.co_name) and not (nested is code and selected):
                continue  # as discovery: no __repr__/__eq__/__hash__... (local classes too)
            if is_opted_out_code(nested):
                continue
            if (nested is code and selected) or self._selector.matches(module,
                                                                       nested.co_qualname):
                into.append(nested)
        return into

    def _register(self, codes: list[CodeType], module: str) -> None:
        tool = self._tool
        if tool is None or not codes:
            return
        added = []
        with self._lock:
            traced, modules = self._traced, self._modules
            for code in codes:
                key = id(code)
                if traced.get(key) is code:
                    continue
                traced[key] = code
                modules[key] = module
                added.append(code)
            self.matched += len(added)
        if self._recorder.dormant:
            return
        set_events = _monitoring.set_local_events
        for code in added:
            if code.co_flags & _CO_SUSPENDS:
                self._watch(tool, code)
                continue
            try:  # _watch, inline for plain functions: once per def
                set_events(tool, code, _CALL_EVENTS)
            except Exception:
                self._watch(tool, code)  # logs it

    def _watch(self, tool: int, code: CodeType) -> None:
        events = _CALL_EVENTS | (_SUSPEND_EVENTS if code.co_flags & _CO_SUSPENDS else 0)
        try:
            _monitoring.set_local_events(tool, code, events)
        except Exception:
            module = self._modules.get(id(code), "?")
            log_once(f"events:{module}.{code.co_qualname}",
                     "autotrace: cannot monitor %s.%s; it runs untraced", module,
                     code.co_qualname)

    def _forget(self, code: CodeType) -> None:
        """Stop watching code opted out after it was selected: ``@no_trace`` runs with
        the body that defines the function, after a run module's or an enclosing
        function's code was walked. Called at its first call: none of it is running."""
        with self._lock:
            key = id(code)
            if self._traced.get(key) is code:
                del self._traced[key]
                self._modules.pop(key, None)
                self._infos.pop(key, None)
        tool = self._tool
        if tool is not None:
            try:
                _monitoring.set_local_events(tool, code, 0)
            except Exception:
                pass

    def _wake(self) -> None:
        """A provider appeared: turn on the events a dormant installation held back."""
        tool = self._tool
        if tool is None:
            return
        if _GLOBAL_EVENTS:
            _monitoring.set_events(tool, _GLOBAL_EVENTS)
        with self._lock:
            codes = list(self._traced.values())
        for code in codes:
            self._watch(tool, code)

    # -- event callbacks (hot path) -----------------------------------------------------

    def _describe_first(self, code: CodeType) -> FunctionInfo | None:
        """The description of a selected code object, made at its first call; None: not
        traced (no longer selected, or opted out after it was). The compiled callbacks
        call this for a code object's first call, then start it themselves."""
        key = id(code)
        if self._traced.get(key) is not code:
            return None
        info = self._infos.get(key)
        if info is None:
            if is_opted_out_code(code):
                self._forget(code)  # @no_trace ran after the code was selected
                return None
            try:
                info = self._recorder.describe_code(code, self._modules[key],
                                                    code.co_qualname)
                self._infos[key] = info
            except Exception:
                log_once("monitoring:start", "autotrace: error at a traced call's start; "
                         "it runs untraced")
                return None
        return info

    def _on_start(self, code: CodeType, offset: int) -> Any:
        try:
            if self._traced.get(id(code)) is not code:
                return None
            frame = _get_frame(1)
            if frame.f_code is not code:
                return None  # a shim frame (events fired through the C API)
            info = self._infos.get(id(code))
            if info is None:  # the first call
                info = self._describe_first(code)
                if info is None:
                    return None
            suspends = bool(code.co_flags & _CO_SUSPENDS)
            call = self._recorder.start(info, None, (), None, frame, suspends)
            if call is None:
                return None
            key = id(frame)
            self._calls[key] = (call, code)
            # 3.13.0 sends no event when a handler-less generator is closed (gh-140373),
            # and no version sends events while a callback runs: a generator finalised
            # inside autotrace's own work (an export) would keep its span open forever.
            if suspends and frame.f_trace is None and sys.gettrace() is None:
                frame.f_trace = _FrameSentinel(self, key)
        except Exception:
            log_once("monitoring:start", "autotrace: error at a traced call's start; it "
                     "runs untraced")
        return None

    def _on_return(self, code: CodeType, offset: int, retval: Any) -> Any:
        try:
            running = self._calls.pop(id(_get_frame(1)), None)
            if running is not None and running[1] is code:
                self._recorder.finish(running[0], RETURNED, retval)
        except Exception:
            log_once("monitoring:return", "autotrace: error at a traced call's return")
        return None

    def _on_yield(self, code: CodeType, offset: int, value: Any) -> Any:
        try:
            running = self._calls.get(id(_get_frame(1)))
            if running is not None and running[1] is code:
                self._recorder.suspend(running[0])
        except Exception:
            log_once("monitoring:yield", "autotrace: error at a traced generator's yield")
        return None

    def _on_resume(self, code: CodeType, offset: int) -> Any:
        try:
            running = self._calls.get(id(_get_frame(1)))
            if running is not None and running[1] is code:
                self._recorder.resume(running[0])
        except Exception:
            log_once("monitoring:resume", "autotrace: error at a traced generator's resume")
        return None

    def _on_throw(self, code: CodeType, offset: int, exc: BaseException) -> None:
        # Global before 3.15: filter by code identity first; never return DISABLE.
        if self._traced.get(id(code)) is not code:
            return
        try:  # as _on_resume, inline: _get_frame(1) must be the generator's frame
            running = self._calls.get(id(_get_frame(1)))
            if running is not None and running[1] is code:
                self._recorder.resume(running[0])
        except Exception:
            log_once("monitoring:throw", "autotrace: error at a traced generator's throw")

    def _on_unwind(self, code: CodeType, offset: int, exc: BaseException) -> None:
        # Global before 3.15: filter by code identity first; never return DISABLE.
        if self._traced.get(id(code)) is not code:
            return
        try:
            running = self._calls.pop(id(_get_frame(1)), None)
            if running is not None and running[1] is code:
                self._recorder.finish(running[0], RAISED, exc)
        except Exception:
            log_once("monitoring:unwind", "autotrace: error at a traced call's exception")

    def _frame_released(self, key: int) -> None:
        """A suspending frame is gone; end its span if no event did (3.13.0)."""
        try:
            running = self._calls.pop(key, None)
            if running is not None:
                self._recorder.finish(running[0], ABANDONED, None)
        except Exception:
            log_once("monitoring:release", "autotrace: error ending an abandoned span")


def _original_code(func: Any) -> CodeType | None:
    """The code a call really runs: decorators' wrappers are skipped (``__wrapped__``)."""
    if type(func) is FunctionType and getattr(func, "__wrapped__", None) is None:
        return func.__code__  # most functions: once per def
    unwrapped = func
    for _ in range(32):
        inner = getattr(unwrapped, "__wrapped__", None)
        if inner is None:
            break
        unwrapped = inner
    return code_of(unwrapped)


def _holds_code(code: CodeType) -> bool:
    """Whether functions (or classes, comprehensions) are defined inside ``code``."""
    for const in code.co_consts:
        if type(const) is CodeType:
            return True
    return False


def _walk(code: CodeType) -> list[CodeType]:
    """``code`` and every code object nested in its constants, depth first. A list, made
    without a generator's frames: this runs once per def as a traced module is imported,
    and most functions have no nested code."""
    if not _holds_code(code):
        return [code]  # most functions
    found: list[CodeType] = []
    stack = [code]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        stack.extend([c for c in current.co_consts if type(c) is CodeType])
    return found
