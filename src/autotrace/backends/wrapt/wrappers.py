"""wrapt proxies that open a span around each call, one kind per calling convention.

The proxy forwards ``__code__``, so ``inspect.iscoroutinefunction`` and
friends report the wrapped function's kind whatever the wrapper is; each
wrapper therefore keeps the wrapped function's convention:

* plain functions: the span covers the call;
* coroutine functions: the call creates the coroutine at once (bad arguments
  raise where they used to) and returns a coroutine whose span covers the
  whole ``await``;
* generator and async generator functions: the call creates the generator at
  once and returns a driver generator that opens the span when the body first
  runs, makes it current only while the body runs (never while the consumer
  holds an item), and ends it when the body returns, raises or is closed.

Per-function data (``FunctionInfo``) is built lazily on the first call, so
importing a module with many functions stays cheap.
"""

from __future__ import annotations

import functools
import inspect
from inspect import CO_ASYNC_GENERATOR, CO_COROUTINE, CO_GENERATOR
from types import (
    AsyncGeneratorType,
    CodeType,
    CoroutineType,
    FunctionType,
    GeneratorType,
    MethodType,
    WrapperDescriptorType,
    coroutine,
)
from typing import Any, AsyncGenerator, Callable, Coroutine, Generator

import wrapt

from ..._log import log_once
from ...describe.function import FunctionInfo
from ...record import accel
from ...record.contract import RAISED, RETURNED, Core
from ...selection.names import namespace_module_name
from .stack import (
    STACK_NAMES,
    inspects_stack,  # noqa: F401  (re-exported for the backend)
)

Args = tuple[Any, ...]
Kwargs = dict[str, Any]
Wrapper = Callable[[Callable[..., Any], Any, Args, Kwargs], Any]


class BoundTracedFunction(wrapt.BoundFunctionWrapper):  # type: ignore[misc, type-arg]
    """A traced method bound to an instance or class; pickles as ``getattr(owner, name)``."""

    def __reduce_ex__(self, protocol: Any) -> Any:
        target = self._self_instance
        if target is None:
            target = self._self_owner
        return getattr, (target, self.__name__)

    def __reduce__(self) -> Any:
        return self.__reduce_ex__(2)

    def __copy__(self) -> BoundTracedFunction:
        return self

    def __deepcopy__(self, memo: Any) -> BoundTracedFunction:
        return self


class TracedFunction(wrapt.FunctionWrapper):  # type: ignore[misc, type-arg]
    """The proxy put in place of a traced function; pickles by reference like it."""

    __bound_function_wrapper__ = BoundTracedFunction

    @property
    def __wrapped__(self) -> Any:  # type: ignore[override]
        """What the function itself names as wrapped (``functools.wraps`` inside a
        traced decorator: ``memoize(f).__wrapped__ is f``), else the function."""
        target = _TARGET.__get__(self, type(self))
        if type(target) is FunctionType:
            return getattr(target, "__wrapped__", target)
        return target

    def __setattr__(self, name: str, value: Any) -> None:
        """``functools.wraps`` on a traced closure (``memof.__wrapped__ = func``) must not
        retarget the proxy (wrapt's meaning of setting ``__wrapped__``): the attribute
        goes to the function, like every other one, and the chain stays unwrappable."""
        if name == "__wrapped__":
            setattr(_TARGET.__get__(self, type(self)), name, value)
        else:
            super().__setattr__(name, value)

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        """A function fetched from its class is itself (``C.m is C.m``, as untraced:
        class libraries compare ``cls.__setattr__`` with their own); called so, it
        gets ``self`` among its arguments, which the description expects."""
        if instance is None and self._self_binding == "function":
            return self
        return super().__get__(instance, owner)

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.__qualname__

    def __reduce__(self) -> Any:
        return self.__qualname__

    def __copy__(self) -> TracedFunction:
        return self

    def __deepcopy__(self, memo: Any) -> TracedFunction:
        return self


class TracedPlainFunction(TracedFunction):
    """The proxy of a plain function (a ``def`` anywhere: module level, nested, in a
    class body, under ``@staticmethod``), which binds as a function does.

    Fetched from its class it is itself; fetched through an instance it is a bound
    method of the proxy (``MethodType(proxy, instance)``), as the untraced function
    gives a bound method of itself: ``type()``, ``__self__``, ``__func__`` (the
    proxy, which is what the class holds), equality, pickling and ``inspect`` are a
    bound method's. Called, the proxy gets the instance among its arguments, as an
    unbound call does (the description knows whether the first one is ``self``).

    wrapt's binding "function" would make a bound wrapper (about 5,000 instructions
    per method fetched) and make every call of an unbound wrapper (``C.m(obj)``, a
    property's getter) look up ``wrapped.__self__``, which a plain function lacks: an
    AttributeError made and cleared per call, about 4,000 more. Binding
    "staticmethod" calls the wrapper with no instance, which is what that lookup found.
    """

    __slots__ = ()

    def __init__(self, wrapped: Any, wrapper: Wrapper) -> None:
        # The compiled wrapper gets a stand-in instance (``_core.UNBOUND``, which it reads
        # as None): with None, wrapt's C call compares the binding with four strings on
        # every call before calling the wrapper (~350 instructions).
        instance = _UNBOUND if type(wrapper) is _COMPILED_WRAPPER else None
        _WRAPPER_INIT(self, wrapped, instance, wrapper, None, "staticmethod")

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self  # fetched from the class: itself, as untraced
        return MethodType(self, instance)


#: wrapt's own ``__wrapped__`` slot: the proxied object whatever the subclass says.
_TARGET: Any = next(vars(k)["__wrapped__"] for k in wrapt.FunctionWrapper.__mro__
                    if "__wrapped__" in vars(k))


def _compiled_binding() -> None:
    """With the extension loaded, both ``__get__`` above run in C (same rules, no Python
    frame per method fetched through an instance)."""
    extension = accel.extension
    if extension is None:
        return
    extension.use_wrapt_get(wrapt.FunctionWrapper.__get__)
    TracedFunction.__get__ = extension.get_method  # type: ignore[method-assign]
    TracedPlainFunction.__get__ = extension.get_plain  # type: ignore[method-assign]


_compiled_binding()


_COMPILED_WRAPPER: Any = accel.extension.FunctionCall if accel.extension is not None else None
_UNBOUND: Any = accel.extension.UNBOUND if accel.extension is not None else None

#: The wrapt class whose initialiser takes the binding (``FunctionWrapper``'s works it
#: out), and that initialiser.
_WRAPPER_BASE: type = next(k for k in wrapt.FunctionWrapper.__mro__[1:] if "__init__" in vars(k))
_WRAPPER_INIT: Any = vars(_WRAPPER_BASE)["__init__"]


#: Code flags of the functions whose calls suspend (generators, coroutines).
_SUSPENDS = CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR


#: ``make(func, module, qualname, implicit_first, code_flags)`` of ``plain_proxy_maker``.
ProxyMaker = Callable[[Any, str, str, bool, int], "TracedPlainFunction"]


def plain_proxy_maker(recorder: Core) -> ProxyMaker:
    """``make(func, module, qualname, implicit_first, code_flags)``: the proxy of a plain
    ``def`` as a module body runs it, the same as ``TracedPlainFunction(func,
    make_wrapper(...))`` described by ``recorder.describe_function``. With the compiled
    core a plain (not suspending) function's proxy is made by two C calls and the wrapt
    initialiser, and the C wrapper keeps the description's arguments itself: no Python
    frame of the general path and no ``partial`` per def, which were most of the import
    cost of a traced module (a module of 1,000 defs)."""
    describe_function = recorder.describe_function

    def general(func: Any, module: str, qualname: str, implicit_first: bool, flags: int
                ) -> TracedPlainFunction:
        describe = functools.partial(describe_function, func, module, qualname,
                                     implicit_first)
        return TracedPlainFunction(func, make_wrapper(func, recorder, describe, flags))

    if not _wraps_in_c(recorder):
        return general
    new, init, function_call, unbound = (TracedPlainFunction.__new__, _WRAPPER_INIT,
                                         _COMPILED_WRAPPER, _UNBOUND)

    def make(func: Any, module: str, qualname: str, implicit_first: bool, flags: int
             ) -> TracedPlainFunction:
        if flags & _SUSPENDS:
            return general(func, module, qualname, implicit_first, flags)
        proxy: TracedPlainFunction = new(TracedPlainFunction)
        init(proxy, func, unbound, function_call(recorder, describe_function, func, module,
                                                 qualname, implicit_first),
             None, "staticmethod")
        return proxy
    return make


def plain_definers(wrap_defined: Callable[[Any, bool], Any], recorder: Core,
                   defined: list[TracedFunction]) -> tuple[Any, Any] | None:
    """The compiled core's decorators for rewritten defs, outside a class body and in
    one (``_core.Definer``): ``wrap_defined``'s common case, each proxy made as
    ``plain_proxy_maker``'s ``make`` makes it and appended to ``defined``; the rest
    handed to ``wrap_defined``. None: no compiled core (``make`` alone is used)."""
    extension = accel.extension
    if extension is None or not _wraps_in_c(recorder):
        return None
    if not isinstance(_WRAPPER_INIT, WrapperDescriptorType):
        return None  # wrapt's pure-Python classes (WRAPT_DISABLE_EXTENSIONS): no C slot
    return tuple(  # type: ignore[return-value]
        extension.Definer(wrap_defined, recorder, recorder.describe_function,
                          TracedPlainFunction, _WRAPPER_BASE, defined, namespace_module_name,
                          STACK_NAMES, implicit_first)
        for implicit_first in (False, True))


def _wraps_in_c(recorder: Core | None) -> bool:
    """Whether ``recorder``'s wrappers of plain functions are the C ``FunctionCall``."""
    probe = recorder.compiled_wrapper(_never_described) if recorder is not None else None
    return probe is not None and type(probe) is _COMPILED_WRAPPER


def _never_described() -> FunctionInfo:
    raise AssertionError("a probe wrapper is never called")


def raw_target(proxy: TracedFunction) -> Any:
    """The object a proxy calls (a function, or a static/class method object)."""
    return _TARGET.__get__(proxy, type(proxy))


def make_wrapper(func: Any, recorder: Core, describe: Callable[[], FunctionInfo],
                 flags: int | None = None) -> Wrapper:
    """The wrapt wrapper for ``func``, chosen by its calling convention (``flags``: the
    code flags of a plain function, known to the caller)."""
    kind = _calling_convention(func) if flags is None else _convention_of_flags(flags)
    if kind is _FUNCTION:
        return _function_wrapper(recorder, describe)
    cell: list[FunctionInfo | None] = [None]

    def info() -> FunctionInfo:
        found = cell[0]
        if found is None:
            found = cell[0] = describe()
        return found

    # (the types that inspect.isasyncgen / iscoroutine / isgenerator check, without
    # their Python frame per call)
    if kind is _ASYNC_GENERATOR:
        return _suspending_wrapper(recorder, info, AsyncGeneratorType, _drive_async_generator)
    if kind is _COROUTINE:
        return _suspending_wrapper(recorder, info, CoroutineType, _start_coroutine)
    return _suspending_wrapper(recorder, info, GeneratorType, _drive_generator)


_FUNCTION, _GENERATOR, _COROUTINE, _ASYNC_GENERATOR = "function", "generator", "coroutine", \
    "async generator"


def _calling_convention(func: Any) -> str:
    """Read from the code flags of a plain function (three ``inspect`` calls cost
    more than the rest of wrapping it); ``inspect`` for anything else."""
    if type(func) is FunctionType and not hasattr(func, "_is_coroutine_marker"):
        return _convention_of_flags(func.__code__.co_flags)
    if inspect.isasyncgenfunction(func):
        return _ASYNC_GENERATOR
    if inspect.iscoroutinefunction(func):
        return _COROUTINE
    if inspect.isgeneratorfunction(func):
        return _GENERATOR
    return _FUNCTION


def _convention_of_flags(flags: int) -> str:
    if flags & CO_ASYNC_GENERATOR:
        return _ASYNC_GENERATOR
    if flags & CO_COROUTINE:
        return _COROUTINE
    if flags & CO_GENERATOR:
        return _GENERATOR
    return _FUNCTION


def _function_wrapper(recorder: Core, describe: Callable[[], FunctionInfo]) -> Wrapper:
    if recorder is not None:
        compiled = recorder.compiled_wrapper(describe)  # no Python frame added per call
        if compiled is not None:
            return compiled  # type: ignore[no-any-return]
    # Few objects per wrapper (one closure cell): a module wrapped as it is defined
    # makes one wrapper per def, and each object tracked by the collector costs import time.
    state: list[Any] = [None, recorder, describe]

    def traced_call(wrapped: Callable[..., Any], instance: Any, args: Args,
                    kwargs: Kwargs) -> Any:
        function_info, recorder, describe = state
        call = None
        if not recorder.dormant:  # no provider yet: not even the lazy description
            try:
                if function_info is None:
                    function_info = state[0] = describe()
                call = recorder.start(function_info, instance, args, kwargs)
            except Exception:  # autotrace's own failure: the call runs untraced
                _failed_start(wrapped)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            if call is not None:
                recorder.finish(call, RAISED, exc)
            _drop_own_entry(exc)
            raise
        if call is not None:
            recorder.finish(call, RETURNED, result)
        return result

    return traced_call


class _Owned:
    """Holds the real coroutine for its driver; closes it if the driver never ran.

    Without this, a driver that is closed or dropped before it starts would
    leave the real coroutine to warn "was never awaited" a second time.
    """

    __slots__ = ("coroutine",)

    def __init__(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        self.coroutine = coroutine

    def __del__(self) -> None:
        self.coroutine.close()


def _suspending_wrapper(recorder: Core, info: Callable[[], FunctionInfo],
                        made: Any, drive: Callable[..., Any]) -> Wrapper:
    """Generators, coroutines, async generators: the call makes the object at once (bad
    arguments raise where they used to) and returns ``drive``'s driver around it, named
    as it is. Once per generator: kept to one Python frame besides the driver's."""
    def traced_suspending_call(wrapped: Callable[..., Any], instance: Any, args: Args,
                               kwargs: Kwargs) -> Any:
        try:
            inner = wrapped(*args, **kwargs)
        except BaseException as exc:
            _drop_own_entry(exc)
            raise
        if not isinstance(inner, made):
            return inner  # a decorator changed what the function returns
        try:
            function_info = info()
        except Exception:
            _failed_start(wrapped)
            return inner
        driver = drive(inner, recorder, function_info, instance, args, kwargs)
        try:
            driver.__name__ = inner.__name__
            driver.__qualname__ = inner.__qualname__
        except (AttributeError, TypeError):
            pass
        return driver

    return traced_suspending_call


def _start_coroutine(coroutine: Coroutine[Any, Any, Any], *rest: Any) -> Any:
    """The coroutine's driver, holding it through ``_Owned`` from before it starts."""
    return _drive_coroutine(_Owned(coroutine), *rest)


async def _drive_coroutine(owned: _Owned, recorder: Core, info: FunctionInfo,
                           instance: Any, args: Args, kwargs: Kwargs) -> Any:
    coroutine = owned.coroutine
    call = _start(recorder, info, instance, args, kwargs)
    del instance, args, kwargs  # the body holds its own arguments for as long as it wants
    if call is None:
        return await coroutine
    try:
        if recorder.own_time:  # the profile: the body's time, not while it waits (_step)
            result = await _step(coroutine, recorder, call)
        else:
            result = await coroutine
    except BaseException as exc:
        recorder.finish(call, RAISED, exc)
        _drop_own_entry(exc)
        raise
    recorder.finish(call, RETURNED, result)
    return result


@coroutine
def _step(awaited: Coroutine[Any, Any, Any], recorder: Core, call: Any) -> Any:
    """Await ``awaited`` one step at a time, telling the recorder when its body stops
    and starts again, as ``_drive_generator`` does (a plain ``await`` hides the
    suspensions, so the coroutine would own the time it spent waiting)."""
    value: Any = None
    error: BaseException | None = None
    box: list[Any] = []  # the item in flight; see _drive_generator
    while True:
        try:
            box.append(awaited.send(value) if error is None else awaited.throw(error))
        except StopIteration as stop:
            return stop.value
        finally:
            error = value = None
        recorder.suspend(call)
        try:
            value = yield box.pop()
        except GeneratorExit:
            recorder.resume(call)
            awaited.close()
            raise
        except BaseException as exc:
            error, value = exc, None
        recorder.resume(call)


def _drive_generator(generator: Generator[Any, Any, Any], recorder: Core,
                     info: FunctionInfo, instance: Any, args: Args,
                     kwargs: Kwargs) -> Generator[Any, Any, Any]:
    try:  # _start, inline: once per generator
        call = recorder.start(info, instance, args, kwargs, None, True)
    except Exception:
        _failed_start(info.span_name)
        call = None
    del instance, args, kwargs  # the body holds its own arguments for as long as it wants
    if call is None:
        return (yield from generator)
    value: Any = None
    error: BaseException | None = None
    # The item in flight passes through ``box`` so that no local of this driver
    # keeps it (or the value sent in) alive while the generator is suspended.
    box: list[Any] = []
    while True:
        try:
            box.append(generator.send(value) if error is None else generator.throw(error))
        except StopIteration as stop:
            recorder.finish(call, RETURNED, stop.value)
            return stop.value
        except BaseException as exc:
            recorder.finish(call, RAISED, exc)
            _drop_own_entry(exc)
            raise
        finally:
            error = value = None
        recorder.suspend(call)
        try:
            value = yield box.pop()
        except GeneratorExit as exit_:
            recorder.resume(call)
            try:
                generator.close()
            except BaseException as exc:
                recorder.finish(call, RAISED, exc)
                raise
            recorder.finish(call, RAISED, exit_)
            raise
        except BaseException as exc:
            error, value = exc, None
        recorder.resume(call)


async def _drive_async_generator(generator: AsyncGenerator[Any, Any], recorder: Core,
                                 info: FunctionInfo, instance: Any, args: Args,
                                 kwargs: Kwargs) -> AsyncGenerator[Any, Any]:
    call = _start(recorder, info, instance, args, kwargs)
    del instance, args, kwargs  # the body holds its own arguments for as long as it wants
    value: Any = None
    error: BaseException | None = None
    box: list[Any] = []  # the item in flight; see _drive_generator
    while True:
        try:
            if error is None:
                box.append(await generator.asend(value))
            else:
                box.append(await generator.athrow(error))
        except StopAsyncIteration:
            if call is not None:
                recorder.finish(call, RETURNED, None)
            return
        except BaseException as exc:
            if call is not None:
                recorder.finish(call, RAISED, exc)
            _drop_own_entry(exc)
            raise
        finally:
            error = value = None
        if call is not None:
            recorder.suspend(call)
        try:
            value = yield box.pop()
        except GeneratorExit as exit_:
            if call is not None:
                recorder.resume(call)
            try:
                await generator.aclose()
            except BaseException as exc:
                if call is not None:
                    recorder.finish(call, RAISED, exc)
                raise
            if call is not None:
                recorder.finish(call, RAISED, exit_)
            raise
        except BaseException as exc:
            error, value = exc, None
        if call is not None:
            recorder.resume(call)


def _start(recorder: Core, info: FunctionInfo, instance: Any, args: Args,
           kwargs: Kwargs) -> Any:
    """A suspending call's start (once per generator, not per item); never raises."""
    try:
        return recorder.start(info, instance, args, kwargs, None, True)  # positional: C
    except Exception:
        _failed_start(info.span_name)
        return None


def _failed_start(what: Any) -> None:
    name = what if isinstance(what, str) else getattr(what, "__qualname__", repr(what))
    log_once(f"start:{name}", "autotrace: could not start tracing a call of %s; it runs "
             "untraced", name)


def _drop_own_entry(exc: BaseException) -> None:
    """Give an exception leaving a wrapper the traceback it has untraced: without
    the wrapper's own entry, which the bare ``raise`` after this does not add back
    (3.11+; 3.10 re-raises the traceback its handler caught). Code that filters
    frames by code object, or checks that a ``TypeError`` came from its own call
    line (arity probing), then sees what it sees untraced."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_code in WRAPPER_CODES:
        tb = tb.tb_next
        while tb is not None and tb.tb_frame.f_code is _STEP_CODE:
            tb = tb.tb_next  # a coroutine stepped through (_step)
        exc.__traceback__ = tb


_STEP_CODE = _step.__code__
#: The wrappers' and drivers' code: their entry is dropped from escaping tracebacks.
WRAPPER_CODES: frozenset[CodeType] = frozenset({
    _function_wrapper(None, None).__code__,  # type: ignore[arg-type, attr-defined]
    _suspending_wrapper(None, None, None, None).__code__,  # type: ignore[arg-type, attr-defined]
    _drive_coroutine.__code__,
    _step.__code__,
    _drive_generator.__code__,
    _drive_async_generator.__code__,
})
