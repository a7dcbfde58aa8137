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

import inspect
from inspect import CO_ASYNC_GENERATOR, CO_COROUTINE, CO_GENERATOR
from types import FunctionType
from typing import Any, AsyncGenerator, Callable, Coroutine, Generator

import wrapt

from ...describe.function import FunctionInfo
from ...record import RAISED, RETURNED, Recorder

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

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.__qualname__

    def __reduce__(self) -> Any:
        return self.__qualname__

    def __copy__(self) -> TracedFunction:
        return self

    def __deepcopy__(self, memo: Any) -> TracedFunction:
        return self


def make_wrapper(func: Any, recorder: Recorder, describe: Callable[[], FunctionInfo]) -> Wrapper:
    """The wrapt wrapper for ``func``, chosen by its calling convention."""
    kind = _calling_convention(func)
    if kind is _FUNCTION:
        return _function_wrapper(recorder, describe)
    cell: list[FunctionInfo | None] = [None]

    def info() -> FunctionInfo:
        found = cell[0]
        if found is None:
            found = cell[0] = describe()
        return found

    if kind is _ASYNC_GENERATOR:
        return _async_generator_wrapper(recorder, info)
    if kind is _COROUTINE:
        return _coroutine_wrapper(recorder, info)
    return _generator_wrapper(recorder, info)


_FUNCTION, _GENERATOR, _COROUTINE, _ASYNC_GENERATOR = "function", "generator", "coroutine", \
    "async generator"


def _calling_convention(func: Any) -> str:
    """Read from the code flags of a plain function (three ``inspect`` calls cost
    more than the rest of wrapping it); ``inspect`` for anything else."""
    if type(func) is FunctionType and not hasattr(func, "_is_coroutine_marker"):
        flags = func.__code__.co_flags
        if flags & CO_ASYNC_GENERATOR:
            return _ASYNC_GENERATOR
        if flags & CO_COROUTINE:
            return _COROUTINE
        if flags & CO_GENERATOR:
            return _GENERATOR
        return _FUNCTION
    if inspect.isasyncgenfunction(func):
        return _ASYNC_GENERATOR
    if inspect.iscoroutinefunction(func):
        return _COROUTINE
    if inspect.isgeneratorfunction(func):
        return _GENERATOR
    return _FUNCTION


def _function_wrapper(recorder: Recorder, describe: Callable[[], FunctionInfo]) -> Wrapper:
    cell: list[FunctionInfo | None] = [None]  # described on the first traced call

    def traced_call(wrapped: Callable[..., Any], instance: Any, args: Args,
                    kwargs: Kwargs) -> Any:
        if recorder.dormant:  # no provider yet: not even the lazy description
            return wrapped(*args, **kwargs)
        function_info = cell[0]
        if function_info is None:
            function_info = cell[0] = describe()
        call = recorder.start(function_info, instance, args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            recorder.finish(call, RAISED, exc)
            raise
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


def _coroutine_wrapper(recorder: Recorder, info: Callable[[], FunctionInfo]) -> Wrapper:
    def traced_coroutine_call(wrapped: Callable[..., Any], instance: Any, args: Args,
                              kwargs: Kwargs) -> Any:
        coroutine = wrapped(*args, **kwargs)
        if not inspect.iscoroutine(coroutine):
            return coroutine  # a decorator changed what the function returns
        driver = _drive_coroutine(_Owned(coroutine), recorder, info(), instance, args, kwargs)
        _copy_names(coroutine, driver)
        return driver

    return traced_coroutine_call


async def _drive_coroutine(owned: _Owned, recorder: Recorder, info: FunctionInfo,
                           instance: Any, args: Args, kwargs: Kwargs) -> Any:
    coroutine = owned.coroutine
    call = recorder.start(info, instance, args, kwargs, suspends=True)
    del instance, args, kwargs  # the body holds its own arguments for as long as it wants
    if call is None:
        return await coroutine
    try:
        result = await coroutine
    except BaseException as exc:
        recorder.finish(call, RAISED, exc)
        raise
    recorder.finish(call, RETURNED, result)
    return result


def _generator_wrapper(recorder: Recorder, info: Callable[[], FunctionInfo]) -> Wrapper:
    def traced_generator_call(wrapped: Callable[..., Any], instance: Any, args: Args,
                              kwargs: Kwargs) -> Any:
        generator = wrapped(*args, **kwargs)
        if not inspect.isgenerator(generator):
            return generator  # a decorator changed what the function returns
        driver = _drive_generator(generator, recorder, info(), instance, args, kwargs)
        _copy_names(generator, driver)
        return driver

    return traced_generator_call


def _drive_generator(generator: Generator[Any, Any, Any], recorder: Recorder,
                     info: FunctionInfo, instance: Any, args: Args,
                     kwargs: Kwargs) -> Generator[Any, Any, Any]:
    call = recorder.start(info, instance, args, kwargs, suspends=True)
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


def _async_generator_wrapper(recorder: Recorder, info: Callable[[], FunctionInfo]) -> Wrapper:
    def traced_async_generator_call(wrapped: Callable[..., Any], instance: Any, args: Args,
                                    kwargs: Kwargs) -> Any:
        generator = wrapped(*args, **kwargs)
        if not inspect.isasyncgen(generator):
            return generator
        driver = _drive_async_generator(generator, recorder, info(), instance, args, kwargs)
        _copy_names(generator, driver)
        return driver

    return traced_async_generator_call


async def _drive_async_generator(generator: AsyncGenerator[Any, Any], recorder: Recorder,
                                 info: FunctionInfo, instance: Any, args: Args,
                                 kwargs: Kwargs) -> AsyncGenerator[Any, Any]:
    call = recorder.start(info, instance, args, kwargs, suspends=True)
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


def _copy_names(source: Any, target: Any) -> None:
    try:
        target.__name__ = source.__name__
        target.__qualname__ = source.__qualname__
    except (AttributeError, TypeError):
        pass
