"""A traced program behaves as before: introspection, pickling, copying, stdlib decorators."""

from __future__ import annotations

import abc
import asyncio
import copy
import gc
import inspect
import pickle
import sys
import typing
import warnings

import pytest

from .conftest import Traced

SOURCE = '''
import abc, dataclasses, enum, functools

def documented(a: int, b: str = "x", *args, c=1, **kw) -> str:
    """The docstring."""
    return f"{a}{b}"

async def acoro(x):
    return x

def agen_sync(n):
    yield from range(n)

async def agen(n):
    for i in range(n):
        yield i

@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int = 0
    def norm(self):
        return abs(self.x) + abs(self.y)

class Color(enum.Enum):
    RED = "r"
    GREEN = "g"
    def label(self):
        return self.name.lower()

class Base(abc.ABC):
    @abc.abstractmethod
    def run(self): ...
    def greet(self):
        return "base"

class Child(Base):
    def run(self):
        return "run"
    def greet(self):
        return "child+" + super().greet()

@functools.lru_cache(maxsize=None)
def cached(n):
    return n * 2

@functools.singledispatch
def show(obj):
    return "object"

@show.register
def _(obj: int):
    return "int"

class Counter:
    def __init__(self):
        self.n = 0
    def bump(self, by=1):
        self.n += by
        return self.n
    @classmethod
    def make(cls):
        return cls()
    @staticmethod
    def helper(x):
        return x
'''


def test_function_metadata_and_signature(traced: Traced) -> None:
    mod = traced.load("meta", SOURCE)
    f = mod.documented
    assert f.__name__ == "documented" and f.__qualname__ == "documented"
    assert f.__doc__ == "The docstring." and f.__module__ == mod.__name__
    assert str(inspect.signature(f)) == "(a: int, b: str = 'x', *args, c=1, **kw) -> str"
    assert inspect.isfunction(f)
    assert inspect.iscoroutinefunction(mod.acoro)
    assert inspect.isgeneratorfunction(mod.agen_sync)
    assert inspect.isasyncgenfunction(mod.agen)
    if sys.version_info < (3, 14):  # deprecated in 3.14 (removed in 3.16)
        assert asyncio.iscoroutinefunction(mod.acoro)
    assert str(inspect.signature(mod.Counter().bump)) == "(by=1)"
    assert str(inspect.signature(mod.Counter.bump)) == "(self, by=1)"
    assert typing.get_type_hints(f) == {"a": int, "b": str, "return": str}
    if traced.backend == "wrapt":
        assert inspect.unwrap(f) is not f and inspect.unwrap(f).__code__ is f.__code__


def test_results_of_generators_and_coroutines(traced: Traced) -> None:
    mod = traced.load("meta", SOURCE)
    assert list(mod.agen_sync(3)) == [0, 1, 2]
    assert inspect.isgenerator(mod.agen_sync(1))
    assert asyncio.run(mod.acoro(5)) == 5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coro = mod.acoro(1)
        assert inspect.iscoroutine(coro) and coro.__name__ == "acoro"
        coro.close()  # closing an unstarted coroutine warns about nothing
        del coro
        gc.collect()
        dropped = mod.acoro(2)
        del dropped  # dropping one warns once, as it does untraced
        gc.collect()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert messages == ["coroutine 'acoro' was never awaited"]

    async def consume() -> list[int]:
        return [i async for i in mod.agen(3)]

    assert asyncio.run(consume()) == [0, 1, 2]
    with pytest.raises(TypeError):
        mod.agen_sync()  # bad arguments raise at call time, as before
    with pytest.raises(TypeError):
        mod.acoro()


def test_pickle_and_copy_by_reference(traced: Traced) -> None:
    mod = traced.load("meta", SOURCE)
    for obj in (mod.documented, mod.Counter.bump, mod.Counter.make, mod.Counter.helper,
                mod.cached):
        assert pickle.loads(pickle.dumps(obj)) == obj
    c = mod.Counter()
    bound = pickle.loads(pickle.dumps(c.bump))
    assert bound() == 1
    assert copy.copy(mod.documented) == mod.documented
    assert copy.deepcopy(mod.documented) == mod.documented
    state = pickle.loads(pickle.dumps(mod.Point(1, 2)))
    assert state == mod.Point(1, 2)


def test_dataclass_enum_abc_super_isinstance(traced: Traced) -> None:
    mod = traced.load("meta", SOURCE)
    p = mod.Point(3, -4)
    assert p.norm() == 7 and p == mod.Point(3, -4) and hash(p) == hash(mod.Point(3, -4))
    assert repr(p) == "Point(x=3, y=-4)"
    assert mod.Color.RED.label() == "red" and mod.Color("g") is mod.Color.GREEN
    assert list(mod.Color) == [mod.Color.RED, mod.Color.GREEN]
    with pytest.raises(TypeError):
        mod.Base()
    assert mod.Base.__abstractmethods__ == frozenset({"run"})
    child = mod.Child()
    assert child.run() == "run" and child.greet() == "child+base"
    assert isinstance(child, mod.Base) and issubclass(mod.Child, abc.ABC)
    assert sorted(traced.names()) == sorted(
        ["Point.norm", "Color.label", "Child.run", "Child.greet", "Base.greet"])


def test_lru_cache_and_singledispatch(traced: Traced) -> None:
    mod = traced.load("meta", SOURCE)
    assert mod.cached(2) == 4 and mod.cached(2) == 4
    assert mod.cached.cache_info().hits == 1
    mod.cached.cache_clear()
    assert mod.cached.cache_info().currsize == 0
    assert mod.show("s") == "object" and mod.show(1) == "int"
    assert mod.show.dispatch(int) is not None
    assert "show" in traced.names()


def test_same_results_and_state_as_untraced(traced: Traced) -> None:
    mod = traced.load("meta", SOURCE)
    c = mod.Counter.make()
    assert [c.bump(), c.bump(by=5), c.bump(2)] == [1, 6, 8]
    assert mod.Counter.helper([1]) == [1]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="typing.get_overloads is 3.11+")
def test_overloads_still_registered(traced: Traced) -> None:
    mod = traced.load("ov", '''
from typing import overload
@overload
def f(x: int) -> int: ...
@overload
def f(x: str) -> str: ...
def f(x):
    return x
''')
    assert mod.f(1) == 1
    assert len(typing.get_overloads(mod.f)) == 2


BORROWED = '''
def describe(obj, label="x"):
    return f"{type(obj).__name__}:{label}"

def helper(label):
    return f"static:{label}"

class Host:
    method = describe                 # a module function stored in a class: binds
    static = staticmethod(helper)

    def uses(self):
        return self.method("m"), Host.method(self, "c"), self.static("s"), Host.static("t")
'''


def test_a_module_function_stored_in_a_class_binds_as_untraced(traced: Traced) -> None:
    """Module-level functions get a proxy with no implicit instance (no per-call
    ``__self__`` lookup); stored in a class they still bind like a function."""
    mod = traced.load("borrowed", BORROWED)
    host = mod.Host()
    assert host.uses() == ("Host:m", "Host:c", "static:s", "static:t")
    assert mod.Host.method is mod.Host.__dict__["method"]  # fetched from the class: itself
    assert host.method.__self__ is host
    assert mod.describe(3) == "int:x"
    names = [span.name for span in traced.spans()]
    assert names.count("describe") == 3 and names.count("helper") == 2, names


METHODS = '''
import functools

class Shape:
    def __init__(self, side):
        self.side = side

    def area(self, scale=1):
        return self.side * self.side * scale

    @property
    def perimeter(self):
        return 4 * self.side

    @classmethod
    def unit(cls):
        return cls(1)

    @functools.lru_cache(maxsize=None)
    def cached(self, n):
        return self.side + n
'''


def test_a_method_fetched_through_an_instance_is_a_bound_method(traced: Traced) -> None:
    """As untraced: a bound method of what the class holds (the proxy, under wrapt), so
    ``type``, ``repr``, ``__self__``, ``__func__``, equality, pickling and ``inspect``
    are a bound method's; every way of calling it makes the same span."""
    import inspect
    import pickle
    import types

    mod = traced.load("methods", METHODS)
    shape = mod.Shape(2)
    bound = shape.area
    assert type(bound) is types.MethodType
    assert repr(bound).startswith("<bound method Shape.area of <")
    assert bound.__self__ is shape and bound.__func__ is mod.Shape.__dict__["area"]
    assert bound == shape.area and hash(bound) == hash(shape.area)
    assert str(inspect.signature(bound)) == "(scale=1)"
    assert bound.__name__ == "area" and bound.__qualname__ == "Shape.area"
    assert pickle.loads(pickle.dumps(bound))(3) == 12
    assert (bound(), mod.Shape.area(shape, 2), shape.perimeter, mod.Shape.unit().side,
            shape.cached(1), shape.cached(1)) == (4, 8, 8, 1, 3, 3)
    spans = traced.spans()
    area = [dict(s.attributes) for s in spans if s.name == "Shape.area"]
    assert sorted(a.get("code.function.parameters.scale.value") for a in area) == [1, 2, 3]
    assert not any("code.function.parameters.self.value" in a for a in area), area
    names = [span.name for span in spans]
    assert names.count("Shape.perimeter") == 1 and names.count("Shape.unit") == 1, names
    assert names.count("Shape.cached") == 1, names  # the second call hits the cache
