"""Modules that are run, not imported: ``autotrace.core.compile_main`` traces what they define.

Each test compiles a real source file through the active backend and runs it
the way runpy runs ``python -m pkg.mod`` (``__name__ == "__main__"``,
``__spec__.name`` the module's name) in a fresh namespace.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import textwrap
import traceback
from pathlib import Path
from typing import Any

import pytest

import autotrace
from autotrace.core import compile_main

from .conftest import Traced, parent_name


def run_main(traced: Traced, tmp_path: Path, source: str, **install: Any) -> dict[str, Any]:
    """Install, then compile ``source`` as module ``<prefix>app`` run as ``__main__``."""
    name = traced.modules.name("app")
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    if traced.installation is None:
        traced.install(**install)
    code = compile_main(path.read_bytes(), str(path), name)
    namespace: dict[str, Any] = {
        "__name__": "__main__", "__file__": str(path), "__builtins__": __builtins__,
        "__spec__": importlib.machinery.ModuleSpec(name, None, origin=str(path)),
    }
    exec(code, namespace)
    return namespace


DEFINITIONS = '''
"""The module docstring."""
from __future__ import annotations
import contextlib

def top(x: int) -> int:
    return helper(x) + 1

def helper(x):
    return x * 2

class Shop:
    def buy(self, item):
        return self.price(item)

    @staticmethod
    def price(item):
        return len(item)

if True:
    def in_if():
        return "if"
try:
    def in_try():
        return "try"
except Exception:
    pass
with contextlib.nullcontext():
    def in_with():
        return "with"
for _ in range(1):
    def in_for():
        return "for"

def outer():
    def inner():
        return 1
    return inner()

RESULTS = [top(1), Shop().buy("abc"), in_if(), in_try(), in_with(), in_for(), outer()]
'''


def test_definitions_of_a_run_module_are_traced_as_it_runs(traced: Traced,
                                                            tmp_path: Path) -> None:
    namespace = run_main(traced, tmp_path, DEFINITIONS)
    assert namespace["RESULTS"] == [3, 3, "if", "try", "with", "for", 1]
    names = traced.names()
    for expected in ("top", "helper", "Shop.buy", "Shop.price", "in_if", "in_try", "in_with",
                     "in_for", "outer"):
        assert expected in names
    spans = traced.spans()
    assert parent_name(spans, traced.span("helper")) == "top"
    assert parent_name(spans, traced.span("Shop.price")) == "Shop.buy"
    attrs = traced.attrs("top")
    assert attrs["code.function.name"] == f"{traced.modules.name('app')}.top"
    assert attrs["code.line.number"] == 6
    assert namespace["__doc__"] == "The module docstring."
    assert namespace["top"].__annotations__ == {"x": "int", "return": "int"}


def test_line_numbers_of_the_run_module_are_unchanged(traced: Traced, tmp_path: Path) -> None:
    source = '''
    def fails():
        raise ValueError("line 3")

    class K:
        def method(self):
            return fails()

    def caller():
        try:
            K().method()
        except ValueError as exc:
            return traceback.extract_tb(exc.__traceback__)

    import traceback
    FRAMES = caller()
    LINE = traceback.extract_stack()[-1].lineno
    '''
    namespace = run_main(traced, tmp_path, source)
    user_frames = [(f.name, f.lineno) for f in namespace["FRAMES"]
                   if f.filename.endswith("app.py")]
    assert user_frames == [("caller", 11), ("method", 7), ("fails", 3)]
    assert namespace["LINE"] == 17
    assert namespace["fails"].__code__.co_firstlineno == 2
    assert traced.names().count("fails") == 1


def test_uninstall_stops_tracing_the_run_module(traced: Traced, tmp_path: Path) -> None:
    namespace = run_main(traced, tmp_path, "def f():\n    return 1\nf()\n")
    assert traced.names() == ["f"]
    autotrace.uninstall()
    traced.clear()
    assert namespace["f"]() == 1
    assert traced.names() == []
    if traced.backend == "wrapt":
        assert type(namespace["f"]).__name__ == "function"


def test_async_generators_and_redefinitions(traced: Traced, tmp_path: Path) -> None:
    source = '''
    import asyncio

    async def fetch(x):
        await asyncio.sleep(0)
        return x

    def numbers(n):
        yield from range(n)

    def f():
        return "first"
    FIRST = f()
    def f():
        return "second"
    SECOND = f()
    '''
    namespace = run_main(traced, tmp_path, source)
    assert asyncio.run(namespace["fetch"](7)) == 7
    assert list(namespace["numbers"](3)) == [0, 1, 2]
    assert (namespace["FIRST"], namespace["SECOND"]) == ("first", "second")
    assert sorted(traced.names()) == ["f", "f", "fetch", "numbers"]
    assert traced.attrs("fetch")["code.function.return.value"] == 7


def test_a_module_that_rebinds_the_helpers_still_runs(traced: Traced, tmp_path: Path) -> None:
    source = '''
    def globals():
        return "mine"
    def g():
        return globals()
    RESULT = g()
    '''
    namespace = run_main(traced, tmp_path, source)
    assert namespace["RESULT"] == "mine"


def test_unselected_run_modules_compile_unchanged(traced: Traced, tmp_path: Path) -> None:
    traced.install(patterns=["nothing_selected_here"])
    namespace = run_main(traced, tmp_path, "def f():\n    return 1\nR = f()\n")
    assert namespace["R"] == 1
    assert traced.names() == []


def test_syntax_errors_are_reported_with_the_user_location(traced: Traced,
                                                           tmp_path: Path) -> None:
    with pytest.raises(SyntaxError) as info:
        run_main(traced, tmp_path, "def f():\n    return 1\nx = (\n")
    assert info.value.filename.endswith("app.py")
    assert "".join(traceback.format_exception_only(info.type, info.value))


OPTED_OUT = '''
import autotrace

@autotrace.no_trace
def hidden():
    return 1

class Shop:
    @autotrace.no_trace
    def secret(self):
        return 2

    def open(self):
        return 3

@autotrace.no_trace
class Vault:
    def m(self):
        return 4

def outer():
    @autotrace.no_trace
    def inner():
        return 5
    return inner()

RESULTS = [hidden(), Shop().secret(), Shop().open(), Vault().m(), outer()]
'''


def test_no_trace_holds_in_a_run_module(traced: Traced, tmp_path: Path) -> None:
    """``@no_trace`` is applied as the body runs, after the monitoring backend selected
    the run module's code: the opt-out must still hold (wrapt reads it in the source)."""
    namespace = run_main(traced, tmp_path, OPTED_OUT)
    assert namespace["RESULTS"] == [1, 2, 3, 4, 5]
    assert sorted(traced.names()) == ["Shop.open", "outer"]
