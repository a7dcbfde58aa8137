"""The recorder: every traced call starts and finishes here, whichever backend saw it.

A call is a ``Call``; ``finish`` is the one way it ends (returned, raised,
or abandoned by a generator that vanished without an event), so the guards
live once: the re-entry guard, fork safety and deferred ends.

Two ways of recording, chosen at ``install()``:

* **eager** (no ``min_duration``): the span starts with the call, exactly as
  ``tracer.start_as_current_span`` would place it (same parent, current inside
  the body), with its static attributes; arguments, return value and the depth
  count go in one ``set_attributes`` just before ``end`` (the cheapest pattern
  the SDK allows; a sampler or ``on_start`` processor sees the static ones).
* **pending** (``min_duration`` set): nothing is started. The call records its
  start time and keeps references to its arguments; a ``PendingSpan`` stands in
  the context. When the call ends it is kept if it lasted ``min_duration`` or
  more, raised and the exception escaped (``keep_errors``), or was made real
  meanwhile (a kept call inside it, or any span started inside it, asked for its
  parent): kept calls are
  emitted with their real start and end times, so the first slow call is
  complete. A kept call always lasts at least as long as its kept children, so
  ancestors are made real before their children and no span is re-parented.
  A short call that raised is handed to its traced caller (``Call.failed``): when
  the caller ends, a failure whose exception escaped it (re-raised, or the cause
  or context of what it raised) goes on up with it, and is kept with the chain
  once it reaches untraced code or a foreign span; one the caller handled is
  counted on the caller (``handled``) and dropped, unless ``keep_handled_errors``.

``require_parent`` and ``max_depth`` are decided when the call starts.

Re-entry (the rule for anyone touching this file). Foreign code runs inside
the recorder: the SDK (sampler, span processors, exporters), ``repr()`` of
arguments, and, at any allocation or between any two bytecodes, garbage-collector
finalizers (abandoned traced generators, ``__del__``), weakref callbacks and
signal handlers, which may themselves start and end traced calls. So:

1. **Nothing on the per-call path waits.** ``start``, ``suspend``, ``resume`` and
   the dropped path of ``finish`` touch only their own ``Call``, ContextVars and
   lock-free counters. No lock here, or in what they call, is ever waited for by
   a thread that may already hold it: locks that can be re-entered are ``RLock``s
   around pure bookkeeping, never around foreign code.
2. **Every kept call ends through one queue, at a safe point.** ``finish`` decides
   *whether* a call is kept (pure arithmetic) and appends it to ``_late``;
   ``_drain`` makes and ends its span there and then, unless this thread is
   already inside autotrace's own work (``_local.busy``) or inside an SDK export
   (the suppress-instrumentation key): then it stays queued, with its real end
   time, and the outer work drains it when it is done. Calls *started* while busy
   or exporting are not traced at all.
3. **Making pending spans real is the one step that needs mutual exclusion** (two
   threads may share pending ancestors through a copied context). Its lock is only
   ever *tried*: a drain that finds it taken puts its item back for the holder,
   which drains again after letting go; a foreign span asking for its parent waits
   a bounded time (``_PARENT_WAIT``) for another thread, never for its own.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from time import time_ns
from types import CodeType, FrameType
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Tracer
from opentelemetry.trace.propagation import _SPAN_KEY

from .._log import log_once
from ..config import Config
from ..describe.function import RETURN_KEY, Formatter, FunctionInfo
from ..describe.values import qualified_type_name
from . import accel
from .contract import ABANDONED, RAISED, RETURNED
from .hot import HotBudget, suppressed_attributes
from .metrics import Aggregates
from .spans import (
    DEPTH_LIMITED_KEY,
    PendingSpan,
    TracerSource,
    handled_attributes,
    making_tracer,
    record_failure,
    samples_every_root,
)

_INTERNAL = SpanKind.INTERNAL


def _context_primitives() -> tuple[Callable[[], Any], Callable[[Any], Any],
                                   Callable[[Any], None]]:
    """``get_current``, ``attach``, ``detach``: each a few Python calls deep in the API
    around one ContextVar. When the runtime context is the standard ContextVar one,
    that ContextVar's own C methods do the same; otherwise the API's functions."""
    runtime = getattr(context_api, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if type(runtime).__name__ == "ContextVarsRuntimeContext" and isinstance(var, ContextVar):
        return var.get, var.set, var.reset
    return context_api.get_current, context_api.attach, context_api.detach


_get_current, _attach, _reset = _context_primitives()
#: The ContextVar's own value: ``_get_current`` also sees a context a pending call shows
#: without setting it, with the extension (below, and ``_core.c``: "Shown, not set").
_raw_current = _get_current
_get_frame = sys._getframe


def _detach(token: Any) -> None:
    try:
        _reset(token)
    except Exception:  # a generator finished in another context than it ran in
        detach_failed()


def _unshow(base: Any) -> None:
    """A call that showed its context ends (``_core.c``: "Shown, not set"): what its
    body left attached is undone, as the reset of a token set at its start would."""
    try:
        if _raw_current() is not base:
            _attach(base)
    except Exception:
        detach_failed()


def detach_failed() -> None:
    """A call's context could not be restored (it ended in another context than it ran
    in): logged once, by both cores."""
    log_once("detach", "autotrace: could not restore the context of a traced call",
             exc_info=False)
_set_span_in_context = trace.set_span_in_context
_get_current_span = trace.get_current_span
_get_ident = threading.get_ident
#: ``attrs_at_end`` once a span started with them
_GIVEN = object()
_NO_DEPTH_LIMIT = 1 << 62

#: The innermost traced call running in this context (thread, task).
_current: ContextVar[Any] = ContextVar("autotrace_current_call", default=None)

#: Read and write the innermost traced call here. With the extension loaded, ``_current``
#: holds one chain per context, written in place, and is set only when a context needs
#: a chain of its own (``_core.c``: "The current-call store"); else the call itself,
#: set per call.
_get_call: Callable[[], Call | None]
_set_call: Callable[[Call | None], Any]
if accel.extension is not None:
    _otel = getattr(_get_current, "__self__", None)
    if not isinstance(_otel, ContextVar):
        _otel = None
    accel.extension.use_store(_current, _otel)
    _get_call = accel.extension.current_call
    _set_call = accel.extension.set_current_call
    if _otel is not None:  # the OpenTelemetry context set without unsyncing the chain
        _attach, _reset = accel.extension.attach, accel.extension.detach
        _get_current = accel.extension.otel_current
else:
    _get_call = _current.get
    _set_call = _current.set

#: How long a foreign span that asks for its pending parent waits for another
#: thread that is making pending spans real; past it, the span starts a new trace.
_PARENT_WAIT = 0.05
#: Frames a drain keeps free below the recursion limit (the SDK, processors, exporters).
_STACK_MARGIN = 100
#: ``_materialize``'s answer when another thread holds its lock.
_CONTENDED: Any = object()


class _Local(threading.local):
    busy = False


#: Per-thread flags; the compiled path's own when it is loaded (it reads them from C).
_local: Any = accel.extension.Local() if accel.extension is not None else _Local()

# A span started before a fork must be ended by the process that started it
# only; the child sees a different generation and leaves it alone.
_fork_generation = 0


#: CPython < 3.12 (gh-148891): a ``ContextVar.set`` made by a finaliser while the
#: collector runs inside another ``ContextVar.set`` (allocating its map's nodes) frees
#: that map under it (a segmentation fault), or the outer set then overwrites the
#: inner one (the program's own context is lost: its span cannot be detached). There,
#: from the collector's first callback to its last, the recorder sets no ContextVar on
#: the collecting thread (finalisers run there; other threads, which a finaliser may
#: let run, have contexts of their own): calls that start are not traced, a generator
#: closed by the collector ends without being made current, and kept calls stay queued.
#:
#: The phases are marked by C methods, ``OrderedDict.move_to_end`` (the last key is the
#: phase): a Python callback's first bytecode runs any pending signal handler, whose
#: traced calls would set ContextVars before the callback marked anything. One marker
#: runs before every other callback, one after them all: callbacks the program adds
#: later (a metrics library's, say) are moved inside at the next collection. Between
#: them, second, a Python callback notes the collecting thread (``_collecting``; 0
#: before the first collection: then every thread counts as collecting). One gap is
#: left: a signal handler run by that callback's first bytecode, in a collection that
#: follows one on another thread, finds that thread's ident still noted.
WATCH_COLLECTIONS = sys.version_info < (3, 12)
_IDLE = OrderedDict.fromkeys(("start", "stop"))
_gc_first = _IDLE.copy()
_gc_last = _IDLE.copy()
#: Called as ``(phase, info)``: ``info`` (never empty) is the true ``last`` argument.
_mark_first: Any = _gc_first.move_to_end
_mark_last: Any = _gc_last.move_to_end
_collecting = 0


def _collection_phase(phase: str, info: dict[str, Any]) -> None:
    """Notes the collecting thread (kept after "stop": the last marker ends the
    collection, and until then another thread's calls must stay traced)."""
    global _collecting
    if phase == "start":
        _collecting = threading.get_ident()
        if accel.extension is not None:
            accel.extension.set_collecting(_collecting)
    try:
        _keep_markers_outside(gc.callbacks)
    except Exception:
        pass


def _keep_markers_outside(callbacks: list[Any]) -> None:
    """Autotrace's callbacks first, second and last among the collector's: at "start"
    the collector has not reached the last one yet, nor (after "stop") the next
    collection the first two; the list keeps its length, so it runs every other
    callback once. Found by identity (bound methods compare equal by ``==`` only)."""
    if len(callbacks) >= 3 and callbacks[0] is _mark_first and \
            callbacks[1] is _collection_phase and callbacks[-1] is _mark_last:
        return
    ours = (_mark_first, _collection_phase, _mark_last)
    others = [callback for callback in callbacks
              if not any(callback is own for own in ours)]
    callbacks[:] = [_mark_first, _collection_phase, *others, _mark_last]


def _in_collection() -> bool:
    if _gc_first == _IDLE and _gc_last == _IDLE:
        return False
    thread = _collecting
    return thread == 0 or thread == threading.get_ident()


if WATCH_COLLECTIONS:
    if accel.extension is not None:
        # The thread is noted in the same C call that moves the first marker: with the
        # Python callback noting it after, a thread switch at that callback's first
        # bytecode let another thread run with an earlier collection's ident noted
        # (its calls untraced if it was its own). Without the extension that gap stays.
        accel.extension.set_collection_markers(_gc_first, _gc_last, _IDLE, globals())
        _mark_first = accel.extension.gc_first
    gc.callbacks.insert(0, _mark_first)
    gc.callbacks.append(_collection_phase)
    gc.callbacks.append(_mark_last)

#: Live recorders: a forked child gets fresh locks and an empty queue in each.
_recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1
    if accel.extension is not None:
        accel.extension.set_generation(_fork_generation)
    for recorder in list(_recorders):
        recorder._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


#: A kept call waiting for its span to be made and ended: (call, outcome, value, end_ns).
_Late = tuple["Call", int, Any, int]


class RareFields:
    """The fields of a call that are rarely set: class defaults, so that an instance
    ``__dict__`` appears only when one is set, which keeps a dropped call cheap. Shared
    by ``Call`` and the compiled core's call (``compiled.CompiledCall``)."""

    __slots__ = ()

    escaped: BaseException | None = None  # what a kept child raised
    suppressed: dict[str, int] | None = None  # calls inside it suppressed as hot
    # timed generators and coroutines: time the body ran before its last suspension,
    # and when it last resumed (0: never suspended; -1: suspended now)
    ran_ns = 0
    resumed_ns = 0
    hidden = 0  # traced calls below the depth limit
    values: list[Any] | None = None  # arguments read from a frame
    kept_child = False  # a kept descendant is queued to be made real: keep this one too
    counted = False  # already in the aggregates (the compiled finish counts some calls)
    #: short calls inside it that raised, waiting for it to end: did their exception
    #: escape it (kept with it) or did it handle them (counted)? ``_Late`` items
    failed: list[_Late] | None = None
    handled: dict[str, int] | None = None  # exception type -> count, handled inside it
    attrs: dict[str, Any] | None = None  # arguments rendered at start
    #: a kept call's attributes rendered at its end, before its span started; ``_GIVEN``
    #: once the span started with them
    attrs_at_end: Any = None
    #: the compiled core's: the ContextVar's value under which ``run_ctx`` is current
    #: without being set (``_core.c``: "Shown, not set"); the pure core sets it always
    lazy_base: Any = None
    unshow = False  # it undoes what its body left attached when it ends or suspends


class Call(RareFields):
    """One traced call, from its start to its finish (generators: across suspensions).
    What every call writes is a slot (``RareFields``: the rest)."""

    __slots__ = ("__dict__", "args", "child_ns", "closed", "depth", "frame", "generation", "info",
                 "instance", "kwargs", "parent", "parent_ctx", "run_ctx", "saved", "span",
                 "start_ns", "token", "under_pending")

    def __init__(self, info: FunctionInfo, parent: Call | None, depth: int, instance: Any,
                 args: tuple[Any, ...], kwargs: Mapping[str, Any] | None) -> None:
        self.info = info
        self.parent = parent  # the enclosing traced call when this one started
        self.depth = depth
        self.saved = parent  # what ``_current`` goes back to at suspend/finish
        self.generation = _fork_generation
        self.span: Span | None = None
        self.token: Any = None  # of the context attached while the body runs
        self.run_ctx: Any = None  # the context current in the body (re-attached at resume)
        self.parent_ctx: Any = None  # pending calls: the context the call started in
        self.under_pending = False  # started while its parent's PendingSpan was current
        self.start_ns = 0  # pending calls, and all when aggregated (metrics, profile)
        self.child_ns = 0  # aggregated: time in traced children that finished
        self.closed = False  # set at start: counted only (no span, not current)
        # Where the arguments come from, rendered only if a span records them:
        self.instance = instance
        self.args = args
        self.kwargs = kwargs
        self.frame: FrameType | None = None  # pending calls under monitoring: read at the end


def _exporting() -> bool:
    """Whether this thread is inside an SDK processor's export (of any span)."""
    return bool(_get_current().get(_SUPPRESS_INSTRUMENTATION_KEY))


def _drop(call: Call) -> None:
    """A pending call is not kept, nor are the failures it was holding."""
    while True:
        call.closed = True
        call.instance = call.args = call.kwargs = None  # type: ignore[assignment]
        if call.frame is not None:
            call.frame = None
        failed = call.failed
        if failed is None:
            return
        call.failed = None
        for item in failed[1:]:
            _drop(item[0])
        call = failed[0][0]


def _caused_by(raised: BaseException, error: BaseException) -> bool:
    """Whether ``raised`` is ``error``, or was raised from it or while handling it."""
    node: BaseException | None = raised
    for _ in range(100):  # chains can be long, or (made by hand) cyclic
        if node is None:
            return False
        if node is error:
            return True
        node = node.__cause__ or node.__context__
    return False


def _little_stack_left() -> bool:
    """Whether this thread is within ``_STACK_MARGIN`` of the recursion limit: a deep
    recursion ending. A span's end there could fail half-way inside the SDK (some
    processors told, some not), so it waits for a shallower safe point. Walks at most
    the frames there are (C pointer chasing), once per drain; before 3.12 the limit
    also counts C calls. The compiled core reads the depth the limit counts from the
    thread state (no walk, no ValueError raised per drain)."""
    limit = sys.getrecursionlimit()
    margin = min(_STACK_MARGIN, limit // 4)
    if _recursion_depth is not None:
        depth = _recursion_depth()
        if depth >= 0:
            return depth >= limit - margin
    try:
        _get_frame(limit - margin)
    except ValueError:
        return False
    return True


_recursion_depth: Callable[[], int] | None = (
    accel.extension.recursion_depth if accel.extension is not None else None)


class _SpanWait:
    """Waits for a tracer on behalf of a recorder that keeps aggregates: its calls are
    counted while no provider exists, so the recorder itself is never dormant."""

    dormant = False

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def global_provider_set(self) -> None:
        self.dormant = False
        self._recorder.global_provider_set()


class Recorder:
    """What is kept of the traced calls of one installation (see module docstring): the
    pure-Python ``contract.Core``."""

    #: The storage of the calls the Python methods start (the compiled core's own, so
    #: that the calls inside them, a generator's body, stay on its C path).
    _call_type: Callable[..., Call] = Call

    def __init__(self, config: Config, formatter: Formatter) -> None:
        self.formatter = formatter
        self.capture_args = config.capture_args
        self.capture_return = config.capture_return
        self.max_length = config.max_value_length
        self.scrub = formatter.renderer.scrub  # exception messages and tracebacks
        self.pending = config.min_duration is not None
        self.min_ns = round((config.min_duration or 0) * 1e9)
        self.keep_errors = config.keep_errors
        self.keep_handled = config.keep_handled_errors
        self.require_parent = config.require_parent
        self.max_depth = config.max_depth or _NO_DEPTH_LIMIT
        self.active = True
        self.spans = config.spans
        #: Per-function aggregates of every call (metrics, profile), or None.
        self.stats = (Aggregates(config.metrics, config.profile, config.meter_provider)
                      if config.metrics or config.profile else None)
        self.hot = HotBudget(config) if config.suppress_hot and config.spans else None
        #: Every call is timed (aggregates, or the durations of spans for ``hot``).
        self.timed = self.stats is not None or self.hot is not None
        #: A call's own time is worked out (the profile): the time its body ran, less
        #: its traced children's; generators and coroutines are timed per step.
        self.own_time = config.profile
        self._no_span_rules = not self.spans or self.hot is not None
        #: Who waits for a tracer: the recorder itself (``dormant`` tells the backends
        #: to pass calls through), unless aggregates need every call meanwhile.
        self._waiting: Any = self if self.stats is None else _SpanWait(self)
        self._source = TracerSource(config.tracer_provider, self._waiting)
        self._on_ready: list[Callable[[], None]] = []
        #: Tried, never waited for by its own holder (module docstring, rule 3).
        self._lock = threading.Lock()
        self._holder = 0  # the thread holding ``_lock`` (0: none)
        #: Kept calls whose span is still to be made or ended (rule 2).
        self._late: deque[_Late] = deque()
        self._pending_cache: tuple[Any, Any] = (None, None)
        self._roots_cache: tuple[Any, bool] = (None, False)
        #: Nothing to record (no provider yet, or a no-op one): calls pass through.
        self.dormant = False
        self.tracer: Tracer | None = self._source.resolve()
        _recorders.add(self)

    def _after_fork(self) -> None:
        """In a forked child: a lock held by a thread that did not come along would
        stay taken, and the parent's queued calls are the parent's to end."""
        self._lock = threading.Lock()
        self._holder = 0
        self._late.clear()

    # -- set-up -----------------------------------------------------------------------

    def global_provider_set(self) -> None:
        """The program set the global provider: wake up (see ``TracerSource``)."""
        self.dormant = False
        if self.active:
            tracer = self._source.resolve()
            if tracer is not None:
                self.tracer = tracer
                for callback in self._on_ready:
                    callback()

    def on_ready(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when a dormant installation gets a tracer."""
        self._on_ready.append(callback)

    def describe_function(self, func: Callable[..., Any], module: str, qualname: str,
                          implicit_first: bool) -> FunctionInfo:
        return self.formatter.describe_function(func, module, qualname, implicit_first)

    def describe_code(self, code: Any, module: str, qualname: str) -> FunctionInfo:
        return self.formatter.describe_code(code, module, qualname)

    def compiled_wrapper(self, describe: Callable[..., FunctionInfo], *args: Any) -> Any:
        return None  # the pure core: the backends' Python paths

    def compiled_callbacks(self, backend: Any, traced: dict[int, CodeType]) -> Any:
        return None

    # -- a call starts (hot path) -----------------------------------------------------

    def start(self, info: FunctionInfo, instance: Any, args: tuple[Any, ...],
              kwargs: Mapping[str, Any] | None, frame: FrameType | None = None,
              suspends: bool = False) -> Call | None:
        """A traced call starts; the ``Call`` to finish, or None: let it run untraced.

        Arguments come from the call (``instance, args, kwargs``: wrapt) or from the
        callee's ``frame``, which has just started (monitoring). ``suspends``: a
        generator or coroutine; its arguments are rendered now, so that the
        recorder does not keep them alive while the body may drop them. One
        function, inlined: this runs for every traced call, kept or not.
        """
        if self.require_parent:  # first: the cheapest way out for calls outside requests
            current = _get_current_span(_get_current())
            if current is INVALID_SPAN or (type(current) is not PendingSpan
                                           and not current.get_span_context().is_valid):
                if self.stats is None or not self.active or _local.busy:
                    return None
                return self._counted(info, _get_call(), 0)
        if not self.active or _local.busy or (WATCH_COLLECTIONS and _in_collection()):
            return None
        if self._no_span_rules:  # spans off, or suppress_hot
            if not self.spans:
                return self._unrecorded(info)
            if self.hot is not None and info in self.hot.hot:
                call = self._counted(info, _get_call(), -1)  # depth -1: suppressed as hot
                call.parent_ctx = _get_current()
                call.instance, call.args, call.kwargs = instance, args, kwargs
                if frame is not None:
                    call.frame = frame
                return call
        if self.tracer is None:  # no spans to make yet; aggregates are still kept
            if self._waiting.dormant:
                return self._unrecorded(info)
            tracer = self._source.resolve()
            if tracer is None:
                return self._unrecorded(info)
            self.tracer = tracer
        ctx = _get_current()
        if ctx.get(_SUPPRESS_INSTRUMENTATION_KEY):
            return None
        parent = _get_call()
        if parent is None:
            depth = 1
        else:
            depth = parent.depth + 1
            if depth > self.max_depth:
                parent.hidden += 1
                return None if self.stats is None else self._counted(info, parent,
                                                                     parent.depth)
        if frame is None and (not suspends or self.pending):
            # Plain calls, and every call while it may still be dropped: references
            # only, rendered if the call is kept (a pending generator keeps its
            # arguments alive until it ends; rendering each one at start would cost
            # more than the rest of a dropped call).
            call = self._call_type(info, parent, depth, instance, args, kwargs)
        else:
            call = self._call_type(info, parent, depth, None, (), None)
            if self.capture_args:
                self._arguments_at_start(call, instance, args, kwargs, frame, suspends)
        if self.pending:
            call.start_ns = time_ns()
            call.parent_ctx = ctx
            if (parent is not None and ctx is parent.run_ctx) or (
                    run_ctx := self._pending_context(ctx)) is None:
                # A PendingSpan is current already (the parent's, as a rule): nothing
                # to attach, but generators re-attach it at each resume, maybe elsewhere.
                call.under_pending = True
                call.run_ctx = ctx
                if suspends:
                    call.token = _attach(ctx)
                elif ctx is not (raw := _raw_current()):
                    call.lazy_base = raw  # shown by the enclosing call: shown here too
            else:
                call.run_ctx = run_ctx
                call.token = _attach(run_ctx)
            _set_call(call)
            return call
        if self.timed:
            call.start_ns = time_ns()
        local = _local
        local.busy = True
        try:
            span = self.tracer.start_span(info.span_name, ctx, _INTERNAL)
            run_ctx = _set_span_in_context(span, ctx)
            call.token = _attach(run_ctx)
        except Exception:
            log_once("open", "autotrace: could not start a span for %s; the call runs "
                     "untraced", info.span_name)
            return None
        finally:
            local.busy = False
        call.span = span
        if suspends:
            call.run_ctx = run_ctx
        _set_call(call)
        if self._late:  # a finaliser ended a kept call while the SDK had this thread
            self._drain()
        return call

    def _counted(self, info: FunctionInfo, parent: Call | None, depth: int) -> Call:
        """A call that makes no span but is aggregated: it is not made current, so its
        time counts as its enclosing call's own time (``closed`` marks it)."""
        call = self._call_type(info, parent, depth, None, (), None)
        call.closed = True
        call.start_ns = time_ns()
        return call

    def _unrecorded(self, info: FunctionInfo) -> Call | None:
        """Spans off: the call is only aggregated, and current (for its children's own
        time), with nothing attached to the OpenTelemetry context."""
        if self.stats is None:
            return None
        parent = _get_call()
        depth = 1 if parent is None else parent.depth + 1
        call = self._call_type(info, parent, depth, None, (), None)
        call.start_ns = time_ns()
        _set_call(call)
        return call

    def _arguments_at_start(self, call: Call, instance: Any, args: tuple[Any, ...],
                            kwargs: Mapping[str, Any] | None, frame: FrameType | None,
                            suspends: bool) -> None:
        """Read (frames) or render (suspending calls) the arguments as the call starts."""
        info = call.info
        if frame is None:
            call.attrs = self._render_now(info, instance, args, kwargs or {})
        elif self.pending and not suspends:
            call.frame = frame  # read when the call ends, if it is kept
        else:
            values = self._frame_values(info, frame)
            if suspends and values is not None and not self.pending:
                call.attrs = self._render_values(info, values)
            else:
                call.values = values  # rendered if the call is kept

    def _pending_context(self, ctx: Any) -> Any:
        """``ctx`` with a ``PendingSpan`` current, or None if one is current already.

        The last one made is reused while calls keep starting in the same context
        (a loop at top level, or in one request): a PendingSpan finds its call
        through ``_current`` when asked, so it is not tied to one call.
        """
        cached = self._pending_cache
        if cached[0] is ctx:
            return cached[1]
        if type(_get_current_span(ctx)) is PendingSpan:
            return None
        run_ctx = _set_span_in_context(PendingSpan(self, ctx), ctx)
        self._pending_cache = (ctx, run_ctx)
        return run_ctx

    # -- generators and coroutines ------------------------------------------------------

    def suspend(self, call: Call) -> None:
        """The body yielded or awaited: the call stays open but is no longer current."""
        if WATCH_COLLECTIONS and _in_collection():
            return  # not made current at resume either (gh-148891, above)
        token = call.token
        if token is not None:
            call.token = None
            _detach(token)
        elif call.unshow:
            _unshow(call.lazy_base)
        _set_call(call.saved)
        if self.own_time:
            resumed = call.resumed_ns
            call.ran_ns += time_ns() - (resumed if resumed > 0 else call.start_ns)
            call.resumed_ns = -1

    def resume(self, call: Call) -> None:
        """The body runs again, maybe in another context: make the call current there."""
        if WATCH_COLLECTIONS and _in_collection():
            return  # the collector resumes it to close it (gh-148891, above)
        call.saved = _get_call()
        _set_call(call)
        if self.own_time:
            call.resumed_ns = time_ns()
        if call.run_ctx is not None:  # (a shown call, _core.c: set for this step)
            call.token = _attach(call.run_ctx)

    # -- a call ends (hot path) -------------------------------------------------------

    def finish(self, call: Call, outcome: int, value: Any, restored: bool = False) -> None:
        """The call ended: ``RETURNED`` ``value``, ``RAISED`` ``value``, or
        ``ABANDONED`` (a suspended generator vanished; called from a finaliser).
        ``restored``: the compiled path has already made the caller's context current
        again (before deciding anything: a finaliser may start calls meanwhile, and they
        must not become this call's children)."""
        if outcome != ABANDONED and not restored and not (WATCH_COLLECTIONS and _in_collection()):
            token = call.token
            if token is not None:
                call.token = None
                try:
                    _reset(token)
                except Exception:  # a generator finished in another context
                    detach_failed()
            elif call.unshow:
                _unshow(call.lazy_base)
            _set_call(call.saved)
        if call.generation != _fork_generation:
            return
        span = call.span
        end_ns = 0
        if self.timed:
            now = time_ns()
            duration = now - call.start_ns
            stats = self.stats
            if stats is not None and not call.counted:  # (counted by the compiled finish)
                try:
                    own = 0
                    if self.own_time:
                        resumed = call.resumed_ns
                        ran = duration if resumed == 0 else call.ran_ns + (
                            now - resumed if resumed > 0 else 0)
                        if call.parent is not None and not call.closed:
                            call.parent.child_ns += ran
                        own = ran - call.child_ns
                    stats.finished(call.info, duration, own,
                                   value if outcome == RAISED and isinstance(value, Exception)
                                   else None)
                except Exception:
                    log_once("aggregate", "autotrace: could not count a call of %s",
                             call.info.span_name)
            if span is None and (call.closed or not self.pending or call.parent_ctx is None):
                if call.depth != -1:  # counted only (no ``parent_ctx``: ``_unrecorded``)
                    return
                # suppressed as hot: counted on its enclosing call, unless it raised
                if not (outcome == RAISED and isinstance(value, Exception)):
                    self._hot_counted(call)
                    return
            end_ns = now
        if call.failed is not None:  # its children's failures: escaped, or handled here
            self._settle(call, outcome, value)  # (also when a kept child made it real)
        if span is None and call.depth != -1:  # pending: keep it?
            end_ns = end_ns or time_ns()
            if end_ns - call.start_ns < self.min_ns and not call.kept_child:
                if not (outcome == RAISED and self.keep_errors and isinstance(value, Exception)):
                    _drop(call)
                    if call.span is None and not self._holder:
                        return
                    # Another thread made it real (a kept child there, through a copied
                    # context) between the decision and ``closed``, or is making spans
                    # real now (``_holder`` is set before ``_materialize`` reads
                    # ``closed``): it is ended as kept, else its span would stay open.
                elif not self.keep_handled and self._hold(call, outcome, value, end_ns):
                    return  # its caller decides, when it ends
        # Kept. Only bookkeeping here; the span is made and ended at a safe point.
        if outcome == RAISED and call.parent is not None:
            call.parent.escaped = value  # the exception event goes on this call's span
        item = (call, outcome, value, end_ns or time_ns())
        if call.failed is None and not self._late:
            drained = self._drain(item)  # the common case: ended now, without the queue
        else:
            self._queue(item)
            drained = self._drain()
        if not drained and span is None:
            # Left queued (this thread is busy, or another holds the lock): its
            # pending ancestors (as ``_materialize`` walks them) must not be dropped
            # meanwhile.
            node: Call | None = call
            while node is not None and node.span is None and node.under_pending:
                node = node.parent
                if node is not None and not node.closed:
                    node.kept_child = True

    def _hold(self, call: Call, outcome: int, value: Any, end_ns: int) -> bool:
        """A short call raised: hand it to its traced caller, which knows when it ends
        whether the exception escaped it. False: no such caller (the exception reaches
        untraced code or a span that is not autotrace's), keep it now."""
        parent = call.parent
        if parent is None or not call.under_pending or parent.closed:
            return False
        # setdefault: atomic, though children on other threads may hand theirs meanwhile
        parent.__dict__.setdefault("failed", []).append((call, outcome, value, end_ns))
        return True

    def _settle(self, call: Call, outcome: int, value: Any) -> None:
        """``call`` ended: its children's failures that escaped it stay in ``failed`` (kept
        or handed on with it); those it handled are counted on it and dropped."""
        failed = call.__dict__.pop("failed", None) or []
        escaping = []
        for item in failed:
            error = item[2]
            if outcome == RAISED and _caused_by(value, error):
                escaping.append(item)
                call.escaped = error  # its exception event is on that child's span
            else:
                handled = call.handled
                if handled is None:
                    handled = call.handled = {}
                name = qualified_type_name(type(error))
                handled[name] = handled.get(name, 0) + 1
                _drop(item[0])
        if escaping:
            call.failed = escaping

    def _queue(self, item: _Late) -> None:
        """Queue a kept call, then the failures that escaped through it (after it: each
        is made real under it)."""
        late = self._late
        todo = [item]  # not recursive: a failed recursion hands on a chain as deep as itself
        while todo:
            item = todo.pop()
            late.append(item)
            failed = item[0].failed
            if failed is not None:
                item[0].failed = None
                todo.extend(reversed(failed))

    def _hot_counted(self, call: Call) -> None:
        """A call suppressed as hot ended without raising: counted on its enclosing call."""
        parent = call.parent
        call.instance = call.args = call.kwargs = None  # type: ignore[assignment]
        call.frame = None
        if parent is not None:
            counts = parent.suppressed
            if counts is None:
                counts = parent.suppressed = {}
            name = call.info.qualified_name
            counts[name] = counts.get(name, 0) + 1

    # -- kept calls: made real and ended at a safe point ---------------------------------

    def _drain(self, first: _Late | None = None) -> bool:
        """Make and end the spans of the queued kept calls, unless this thread is inside
        autotrace's own work or an export (then they stay queued for that work to
        drain). True when the queue was left empty. ``first``: a kept call to end
        before the queue, which is empty (queued if this is no safe point)."""
        local = _local
        late = self._late
        if local.busy or (WATCH_COLLECTIONS and _in_collection()) or _exporting() or \
                _little_stack_left():
            if first is not None:
                late.append(first)
            return False
        local.busy = True  # what runs meanwhile queues up behind us (rule 2)
        try:
            item = first
            while True:
                if item is None:
                    if not late:  # (no IndexError raised to end the loop: it costs)
                        return True
                    try:
                        item = late.popleft()
                    except IndexError:  # another thread drained it meanwhile
                        return True
                try:
                    done = self._complete(*item)
                except Exception:  # never into the program's call
                    log_once("close", "autotrace: could not end a kept call's span")
                    done = True
                if not done:
                    late.appendleft(item)
                    if self._lock.locked():
                        return False  # its holder drains again after letting go
                item = None
        finally:
            local.busy = False

    def drain(self) -> None:
        """End what is still queued (``uninstall()``, exit): a safe point by definition."""
        self._drain()

    def _complete(self, call: Call, outcome: int, value: Any, end_ns: int) -> bool:
        """Make ``call``'s span real if it is not, and end it; False: another thread is
        making spans real, try again later."""
        if call.generation != _fork_generation:
            return True  # started before a fork: the parent process ends it
        span = call.span
        if span is None:
            if call.depth == -1:  # suppressed as hot, then raised: a span of its own
                span = self._start_span(call)
            else:
                # Its span starts now, after the fact: with every attribute at once when
                # it will record (one attribute pass in the SDK, not two), rendered
                # before the lock is taken (rendering may run a ``repr``).
                final = call.attrs_at_end
                if final is None and self.tracer is not None and self._will_record(call):
                    try:
                        final = call.attrs_at_end = self._attributes(call, outcome, value)
                    except Exception:  # (the renderers catch their own): no attributes
                        log_once("close", "autotrace: could not record the attributes of %s",
                                 call.info.span_name)
                span = self._materialize(call, wait=False, final=final)
                if span is _CONTENDED:
                    return False  # (its attributes stay rendered for the next try)
            if span is None:
                if call.attrs_at_end is not None:
                    call.attrs_at_end = None
                return True
        call.closed = True
        if self.hot is not None and call.depth != -1:
            self.hot.observe(call.info, end_ns - call.start_ns)
        if self.stats is not None:  # the kept call is its bucket's exemplar (metrics)
            self.stats.kept(call.info, end_ns - call.start_ns, span,
                            value if outcome == RAISED else None)
        self._end(call, span, outcome, value, end_ns)
        if call.attrs_at_end is not None:  # what was rendered dies with the span, not the call
            call.attrs_at_end = None
        return True

    def _start_span(self, call: Call) -> Span | None:
        """The span of a hot call that raised (no children: they ran under its caller)."""
        tracer = self.tracer
        if tracer is None:
            return None
        info = call.info
        try:
            return tracer.start_span(info.span_name, call.parent_ctx, _INTERNAL,
                                     info.static_attributes, start_time=call.start_ns)
        except Exception:
            log_once("open", "autotrace: could not start a span for %s", info.span_name)
            return None

    def _will_record(self, call: Call) -> bool:
        """Whether a span started now for ``call`` will record, as far as is known
        without starting it: under a real parent, whether that parent is sampled (a
        ``ParentBased`` sampler, the default, follows it); with none, whether the
        sampler records every root (``_records_roots``). A guess that costs nothing to
        get wrong but time: the span's attributes are the same either way, but
        rendering them for a span that is sampled out would be wasted."""
        node: Call | None = call
        parent: Any = None
        while node is not None:
            if node.span is not None:
                parent = node.span
                break
            if not node.under_pending:
                ctx = node.parent_ctx
                parent = None if ctx is None else ctx.get(_SPAN_KEY)
                if type(parent) is PendingSpan:  # another chain's: not made real here
                    parent = None
                break
            node = node.parent
        if parent is not None:
            try:
                context = parent.get_span_context()
                if context.is_valid:
                    return bool(context.trace_flags.sampled)
            except Exception:
                return False
        return self._records_roots()

    def _records_roots(self) -> bool:
        """Whether the tracer's sampler records every span with no parent: asked once
        per tracer that makes the spans (the command's tracer stays the same object
        when the program sets its provider, and makes its spans with the program's)."""
        tracer = making_tracer(self.tracer)
        cached = self._roots_cache
        if cached[0] is tracer:
            return cached[1]
        answer = samples_every_root(tracer)
        self._roots_cache = (tracer, answer)
        return answer

    def _attributes(self, call: Call, outcome: int, value: Any) -> dict[str, Any]:
        """Every attribute of an ended call's span but its failure: the static ones
        first, then its arguments and return value, then what happened inside it."""
        attrs = dict(call.info.static_attributes)
        attrs.update(self._arguments(call))
        self._outcome_attributes(call, attrs, outcome, value)
        return attrs

    def _outcome_attributes(self, call: Call, attrs: dict[str, Any], outcome: int,
                            value: Any) -> None:
        if outcome == RETURNED and self.capture_return:
            attrs[RETURN_KEY] = self.formatter.return_value(call.info, value)
        if call.hidden:
            attrs[DEPTH_LIMITED_KEY] = call.hidden
        if call.suppressed:
            attrs.update(suppressed_attributes(call.suppressed))
        if call.handled:
            attrs.update(handled_attributes(call.handled))

    def _end(self, call: Call, span: Span, outcome: int, value: Any, end_ns: int) -> None:
        """Record the call's arguments, return value or failure, and end its span
        (from ``_drain`` only: this thread is marked busy)."""
        try:
            try:
                if span.is_recording():
                    final = call.attrs_at_end
                    if final is _GIVEN:
                        pass  # given when the span started (``_complete``)
                    elif final is not None:  # rendered, but another thread started the span
                        span.set_attributes(final)
                    else:
                        attrs = self._arguments(call)
                        if not self.pending:  # eager: the static attributes were held back
                            attrs.update(call.info.static_attributes)
                        self._outcome_attributes(call, attrs, outcome, value)
                        if attrs:
                            span.set_attributes(attrs)
                    if outcome == RAISED:
                        record_failure(span, value, call.escaped is not value, self.max_length,
                                       self.scrub)
            finally:  # whatever recording did: a span that started must end
                span.end(end_ns)
        except Exception:
            log_once("close", "autotrace: could not end the span of %s", call.info.span_name)

    def _arguments(self, call: Call) -> dict[str, Any]:
        """The argument attributes of ``call`` (rendered now unless at start)."""
        attrs = call.attrs
        if attrs is not None:
            return dict(attrs)
        if not self.capture_args:
            return {}
        info = call.info
        try:
            if call.frame is not None:
                values = self._frame_values(info, call.frame)
                out = {} if values is None else self._render_values(info, values)
                call.frame = None
            elif call.values is not None:
                out = self._render_values(info, call.values)
                call.values = None
            elif call.kwargs is not None:
                out = self.formatter.call_arguments(info, call.instance, call.args,
                                                    call.kwargs)
            else:
                out = {}
        except Exception:
            log_once("arguments", "autotrace: could not record the arguments of %s",
                     info.span_name)
            out = {}
        call.instance = call.args = call.kwargs = None  # type: ignore[assignment]
        return out

    def _frame_values(self, info: FunctionInfo, frame: FrameType) -> list[Any] | None:
        try:
            return self.formatter.frame_values(info, frame)
        except Exception:
            log_once("arguments", "autotrace: could not read the arguments of %s",
                     info.span_name)
            return None

    def _render_now(self, info: FunctionInfo, instance: Any, args: tuple[Any, ...],
                    kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
        if not self.capture_args:
            return None
        local = _local
        busy = local.busy
        local.busy = True
        try:
            return self.formatter.call_arguments(info, instance, args, kwargs)
        except Exception:
            log_once("arguments", "autotrace: could not record the arguments of %s",
                     info.span_name)
            return None
        finally:
            local.busy = busy

    def _render_values(self, info: FunctionInfo, values: list[Any]) -> dict[str, Any]:
        local = _local
        busy = local.busy
        local.busy = True
        try:
            return self.formatter.render_values(info, values)
        finally:
            local.busy = busy

    # -- pending calls made real --------------------------------------------------------

    def materialize_innermost(self, base: Any) -> Span | None:
        """For a ``PendingSpan`` attached over context ``base``: the innermost pending
        call running under it here, made real; None when none is (the context was
        carried somewhere else), so that a span started there becomes a root."""
        node = _get_call()
        walk = node
        while walk is not None:
            if walk.span is not None or not walk.under_pending:
                break
            walk = walk.parent
        if node is None or walk is None or (walk.span is None and walk.parent_ctx is not base):
            return None
        span = self._materialize(node, wait=True)
        if self._late:
            self._drain()  # what queued up behind the lock while this thread held it
        return None if span is _CONTENDED else span

    def _materialize(self, call: Call, wait: bool, final: dict[str, Any] | None = None
                     ) -> Any:
        """Start real spans for ``call`` and its pending ancestors, outermost first,
        each with its recorded start time; ancestors already dropped are skipped.
        ``final``: ``call`` has ended, and these are all its span's attributes.

        ``_CONTENDED`` when the lock is taken: by this thread (a finaliser or a span
        processor re-entered), or by another one and ``wait`` is false or waiting
        ran out (module docstring, rule 3)."""
        tracer = self.tracer
        if tracer is None:
            return None
        lock = self._lock
        if not lock.acquire(blocking=False):
            if not wait or self._holder == _get_ident() or not lock.acquire(
                    timeout=_PARENT_WAIT):
                return _CONTENDED
        local = _local
        busy = local.busy
        local.busy = True
        try:
            self._holder = _get_ident()
            if call.span is not None:
                return call.span
            chain: list[Call] = []
            node: Call | None = call
            parent_span: Span = INVALID_SPAN
            while node is not None:
                if node.span is not None:
                    parent_span = node.span
                    break
                if not node.closed:
                    chain.append(node)
                if not node.under_pending:
                    parent_span = _get_current_span(node.parent_ctx)
                    break
                node = node.parent
            for pending in reversed(chain):
                info = pending.info
                ctx = _set_span_in_context(parent_span, pending.parent_ctx)
                attributes = info.static_attributes
                if pending is call and final is not None:
                    attributes = final
                    call.attrs_at_end = _GIVEN
                pending.span = tracer.start_span(info.span_name, ctx, _INTERNAL, attributes,
                                                 start_time=pending.start_ns)
                parent_span = pending.span
            return call.span
        except Exception:
            log_once("materialize", "autotrace: could not start the spans of a kept call")
            return None
        finally:
            local.busy = busy
            self._holder = 0
            lock.release()
