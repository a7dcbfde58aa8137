"""Wrapping as each def runs: what the user's own decorators receive, and what stays as it was."""

from __future__ import annotations

import importlib
import inspect
import pickle
import sys

import pytest

import autotrace

from .conftest import Traced, parent_name

DECORATED = '''
import contextlib, functools

@contextlib.contextmanager
def opened(name):
    yield name.upper()

class Shop:
    @property
    def size(self):
        return 3

    @classmethod
    def make(cls):
        return cls()

    @staticmethod
    def tax(x):
        return x * 2

    @functools.cached_property
    def cached(self):
        return 5

def plain(x):
    """Doc."""
    return x

@functools.wraps(plain)
def alias_of_plain(x):
    return x
'''


def test_a_contextmanager_span_covers_the_with_block(traced: Traced) -> None:
    mod = traced.load("deco", DECORATED)
    with mod.opened("a") as value:
        assert value == "A"
        assert mod.plain(1) == 1
    assert traced.names() == ["plain", "opened"]
    outer, inner = traced.span("opened"), traced.span("plain")
    assert outer.start_time <= inner.start_time and outer.end_time >= inner.end_time
    # while suspended the generator's span is not current (PITFALLS 3.3): no parent
    assert parent_name(traced.spans(), inner) is None


def test_builtin_descriptors_receive_the_traced_function(traced: Traced) -> None:
    mod = traced.load("deco", DECORATED)
    shop = mod.Shop.make()
    assert isinstance(shop, mod.Shop) and isinstance(shop.make(), mod.Shop)
    assert (shop.size, shop.tax(2), mod.Shop.tax(3), shop.cached, shop.cached) == (3, 4, 6, 5, 5)
    assert traced.names() == ["Shop.make", "Shop.make", "Shop.size", "Shop.tax", "Shop.tax",
                              "Shop.cached"]
    assert traced.args("Shop.size") == {} and traced.spans()[0].attributes is not None


def test_source_lines_and_metadata_are_unchanged(traced: Traced) -> None:
    mod = traced.load("deco", DECORATED)
    assert mod.plain.__code__.co_firstlineno == 25
    assert mod.opened.__wrapped__.__code__.co_firstlineno == 4  # the first decorator
    assert inspect.getsource(mod.plain).startswith("def plain(x):")
    assert inspect.getsource(mod.Shop).startswith("class Shop:")
    assert mod.plain.__doc__ == "Doc." and inspect.unwrap(mod.plain).__name__ == "plain"
    assert pickle.loads(pickle.dumps(mod.plain)) is mod.plain
    # ``__cached__`` is set by the interpreter up to 3.14 only: the same names as untraced
    traced.modules.write("untraced_{p}deco.py", DECORATED)  # outside the patterns
    untraced = importlib.import_module(f"untraced_{traced.modules.prefix}deco")
    del sys.modules[untraced.__name__]
    assert set(vars(mod)) == set(vars(untraced)) and "plain" in vars(mod)
    assert ("__cached__" in vars(mod)) == (sys.version_info < (3, 15))
    assert type(mod.__loader__).__name__ == "SourceFileLoader"


MEMO = '''
import functools

def memoize(func):
    cache = {}

    @functools.wraps(func)
    def memof(*args):
        if args not in cache:
            cache[args] = func(*args)
        return cache[args]
    return memof

CALLS = []

@memoize
def slow(x):
    CALLS.append(x)
    return x * 2
'''


def test_functools_wraps_on_a_traced_closure_keeps_the_closure(traced: Traced) -> None:
    """toolz' memoize and boltons' once: ``update_wrapper`` sets ``memof.__wrapped__``,
    which on a wrapt proxy would retarget it to the undecorated function."""
    mod = traced.load("memo", MEMO)
    traced.clear()  # the body called memoize()
    assert (mod.slow(2), mod.slow(2)) == (4, 4) and mod.CALLS == [2]
    assert mod.slow.__name__ == "slow" and mod.slow.__wrapped__.__name__ == "slow"
    assert inspect.unwrap(mod.slow).__code__.co_name == "slow"
    assert traced.names() == ["slow", "memoize.<locals>.memof", "memoize.<locals>.memof"]


def test_a_loader_that_transforms_source_keeps_its_code(traced: Traced) -> None:
    """typeguard, beartype and other rewriters hand out ``SourceFileLoader`` subclasses
    with their own ``source_to_code``: compiling from source would drop their work."""
    import importlib.machinery
    import sys

    class Shouting(importlib.machinery.SourceFileLoader):
        # 3.15 passes the module name as a third argument (``fullname``)
        def source_to_code(self, data, path, *args, **kwargs):  # type: ignore[override]
            return super().source_to_code(data.replace(b"quiet", b"LOUD"), path, *args,
                                          **kwargs)

    name = traced.modules.module("loud", "def word():\n    return 'quiet'\n\nW = [word]\n")

    class Finder:
        @staticmethod
        def find_spec(fullname, path=None, target=None):  # type: ignore[no-untyped-def]
            if fullname != name:
                return None
            origin = str(traced.modules.root / f"{name}.py")
            return importlib.util.spec_from_file_location(fullname, origin,
                                                          loader=Shouting(fullname, origin))

    import importlib.util

    sys.meta_path.insert(0, Finder)
    try:
        traced.install()
        mod = importlib.import_module(name)
    finally:
        sys.meta_path.remove(Finder)
    assert mod.word() == "LOUD" and mod.W[0]() == "LOUD"
    # wrapt wraps such a module after its body: the registry kept the raw function
    assert traced.names() == (["word"] if traced.backend == "wrapt" else ["word", "word"])


KINDS = '''
import sys, warnings

def plain(x):
    return x + 1

class Box:
    def method(self, x):
        return x * 2

    def __init__(self):
        self.made = True

def gen(n):
    yield from range(n)

async def coro():
    return 1

def outer(x):
    def inner(y):
        return y + 1
    return inner(x)

def caller_name():
    return sys._getframe(1).f_code.co_name

def warns():
    warnings.warn("w", stacklevel=2)
    return 1

KEPT = [plain]
'''


def test_the_compiled_decorator_makes_what_wrap_defined_makes(traced: Traced) -> None:
    """With the compiled core, rewritten defs call ``_core.Definer`` (no Python frame per
    def); it makes a plain def's proxy itself and hands every other def to
    ``wrap_defined``. Both cores end with the same objects, spans and counts, and
    uninstalling puts the Python decorators back."""
    if traced.backend != "wrapt":
        pytest.skip("the rewrite belongs to the wrapt backend")
    from autotrace.backends.wrapt import main
    from autotrace.backends.wrapt.wrappers import TracedPlainFunction

    mod = traced.load("kinds", KINDS)
    compiled = traced.core == "compiled"
    assert (type(main.function).__name__ == "Definer") == compiled
    assert (type(main.method).__name__ == "Definer") == compiled
    # what each def became, whichever made it
    assert type(mod.plain) is TracedPlainFunction and mod.KEPT[0] is mod.plain
    assert type(vars(mod.Box)["method"]) is TracedPlainFunction
    assert type(vars(mod.Box)["__init__"]) is TracedPlainFunction
    assert type(mod.gen).__name__ != "function" and type(mod.coro).__name__ != "function"
    assert type(mod.caller_name).__name__ == "function"  # looks at the stack: unwrapped
    assert type(mod.warns).__name__ == "function"        # stacklevel=: unwrapped
    assert mod.caller_name() == "test_the_compiled_decorator_makes_what_wrap_defined_makes"
    assert mod.plain(1) == 2 and mod.Box().method(2) == 4 and list(mod.gen(2)) == [0, 1]
    assert mod.outer(1) == 2
    assert traced.names() == ["plain", "Box.__init__", "Box.method", "gen", "outer.<locals>.inner",
                              "outer"]
    installation = traced.installation
    assert installation is not None
    assert installation.matched == 7  # plain, method, __init__, gen, coro, outer, inner
    made = sum(definer.made for definer in installation._backend._definers)  # type: ignore[attr-defined]
    assert made == (3 if compiled else 0)  # plain, Box.method, Box.__init__
    autotrace.uninstall()
    assert main.function is main._function and main.method is main._method
