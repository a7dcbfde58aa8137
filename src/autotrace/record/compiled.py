"""The compiled core: ``recorder.Recorder`` with its per-call path in C (``_core.c``).

``CompiledRecorder`` is the Python recorder with ``_core.Core`` as its first base:
the per-call settings live in C fields (the Python methods read and write the same
fields), and ``start`` / ``finish`` are C functions that take the common case (a
pending call started and dropped, a call refused by ``require_parent``) and hand
every other call, unchanged, to the Python methods; ``suspend`` / ``resume`` (a
generator's steps) likewise. So the behaviour is the pure
core's by construction, and the suite runs against both (``core`` fixture).

The backends get C callables for their hot paths through the contract
(``compiled_wrapper``: wrapt's wrapper of a plain function; ``compiled_callbacks``:
sys.monitoring's PY_START, PY_RETURN, PY_YIELD and PY_RESUME).
"""

from __future__ import annotations

from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.trace.propagation import _SPAN_KEY

from .._log import log_once
from ..describe.function import _MISSING
from . import accel, recorder
from .spans import PendingSpan

_core: Any = accel.extension
if _core is None:  # pragma: no cover - imported only when the extension loads
    raise ImportError(accel.why_not)


#: A call's storage in the compiled core, whichever half starts it: the common fields in
#: C, the rare ones as in ``recorder.Call`` (``RareFields``' class defaults). The C path
#: hands any call, or child of a call, that is not one of these to the Python methods.
#: The extension makes the class, so that its dealloc is C's own (a class statement's
#: costs ~120 instructions a dropped call).
CompiledCall: Any = _core.make_call_type(recorder.RareFields)


class CompiledRecorder(_core.Core, recorder.Recorder):  # type: ignore[misc]
    """``recorder.Recorder`` with the per-call path compiled (module docstring)."""

    core_name = "compiled"
    _call_type = CompiledCall

    def __init__(self, config: Any, formatter: Any) -> None:
        super().__init__(config, formatter)
        stats = self.stats
        # The C finish counts a successful call itself when metrics are all its timing
        # is for (no profile, no hot-call budget): ``_core.count_call``.
        self._counts = (stats.by_info if stats is not None and stats.metrics
                        and not stats.profile and self.hot is None else None)

    def _frame_values(self, info: Any, frame: FrameType) -> list[Any] | None:
        """``Recorder._frame_values`` with the frame's own slots read in C (3.12+: no
        ``f_locals`` snapshot, no Python frame of the formatter's); Python reads them
        where C cannot."""
        try:
            values = _core.frame_values(info, frame)
        except Exception:
            values = None
        return super()._frame_values(info, frame) if values is None else values

    def compiled_wrapper(self, describe: Callable[..., Any], *args: Any) -> Any:
        return _core.FunctionCall(self, describe, *args)

    def compiled_callbacks(self, backend: Any, traced: dict[int, CodeType]) -> Any:
        return _core.Monitor(self, backend, traced)


def _report(kind: str, what: Any, error: Any) -> None:
    """An own failure on the compiled path: logged once per kind, never raised."""
    name = what if isinstance(what, str) else getattr(what, "__qualname__", None) or \
        getattr(what, "co_qualname", None) or repr(what)
    if kind == "detach":
        recorder.detach_failed()
    elif kind == "start":
        log_once(f"start:{name}", "autotrace: could not start tracing a call of %s; it "
                 "runs untraced (%r)", name, error, exc_info=False)
    else:
        log_once(f"compiled:{kind}", "autotrace: error in the compiled call path (%s) at "
                 "%s: %r", kind, name, error, exc_info=False)


def _otel_var() -> Any:
    """The runtime context's ContextVar, or None when it is not the standard one (then
    every call takes the Python path)."""
    runtime = getattr(context_api, "_RUNTIME_CONTEXT", None)
    if type(runtime).__name__ != "ContextVarsRuntimeContext":
        return None
    return getattr(runtime, "_current_context", None)


_core.setup(current=recorder._current, otel=_otel_var(),
            suppress_key=_SUPPRESS_INSTRUMENTATION_KEY, span_key=_SPAN_KEY,
            invalid_span=trace.INVALID_SPAN, pending_span=PendingSpan,
            call_type=CompiledCall, start=recorder.Recorder.start,
            finish=recorder.Recorder.finish, suspend=recorder.Recorder.suspend,
            resume=recorder.Recorder.resume, report=_report, missing=_MISSING)
_core.set_generation(recorder._fork_generation)


class _ShownRuntimeContext(ContextVarsRuntimeContext):
    """OpenTelemetry's runtime context, on the same ContextVar, whose ``get_current``
    also sees the context a pending traced call shows without setting it (``_core.c``:
    "Shown, not set"). With no such call running it answers as the original does."""

    get_current = staticmethod(_core.otel_current)

    def attach(self, context: Any) -> Any:
        _core.pin_shown(context)  # the shown call's own base attached again: set it
        return self._current_context.set(context)


def _show_pending_calls() -> None:
    """Install ``_ShownRuntimeContext`` in place of the standard runtime context, once
    per process; it stays after ``uninstall()`` (the same answers then). Another runtime
    context (``OTEL_PYTHON_CONTEXT``), or one replaced later, makes every pending call
    set the ContextVar as before (``shown_on`` in ``_core.c``)."""
    runtime = getattr(context_api, "_RUNTIME_CONTEXT", None)
    if type(runtime) is not ContextVarsRuntimeContext or \
            getattr(runtime, "_current_context", None) is not _otel_var():
        return
    shown = object.__new__(_ShownRuntimeContext)
    shown.__dict__.update(vars(runtime))
    context_api._RUNTIME_CONTEXT = shown  # type: ignore[attr-defined]
    _core.show_through(shown, vars(context_api))


_show_pending_calls()
