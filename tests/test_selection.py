"""Which names a pattern selects, and what is never traced."""

from __future__ import annotations

import pytest

from autotrace.config import make_config
from autotrace.selection import Selector

from .conftest import Traced


def _selector(patterns: list[str], exclude: list[str] | None = None) -> Selector:
    return Selector(make_config(patterns, exclude=exclude or [], environ={}))


@pytest.mark.parametrize(
    ("pattern", "module", "qualname", "expected"),
    [
        ("myapp", "myapp", "f", True),
        ("myapp", "myapp.sub", "Cls.m", True),
        ("myapp", "myapplication", "f", False),
        ("myapp.db", "myapp", "f", False),
        ("myapp.db.Repo.save", "myapp.db", "Repo.save", True),
        ("myapp.db.Repo.save", "myapp.db", "Repo.load", False),
        ("myapp.db.Repo", "myapp.db", "Repo.save", True),
        ("myapp.*.save", "myapp.db", "Repo.save", True),  # * crosses dots
        ("myapp.*.save", "myapp.db", "Repo.saved", False),
        ("*.Repo", "myapp.db", "Repo.save", True),  # prefix rule with wildcards
        ("myapp.d?", "myapp.db", "f", True),
        ("myapp.[cd]b", "myapp.db", "f", True),
        ("myapp.[!d]b", "myapp.db", "f", False),
        ("MyApp", "myapp", "f", False),  # case-sensitive
        ("myapp.util.outer.<locals>.inner", "myapp.util", "outer.<locals>.inner", True),
    ],
)
def test_pattern_rules(pattern: str, module: str, qualname: str, expected: bool) -> None:
    assert _selector([pattern]).matches(module, qualname) is expected


def test_exclude_wins() -> None:
    sel = _selector(["myapp"], ["myapp.vendored", "*.Repo.secret*"])
    assert sel.matches("myapp.core", "f")
    assert not sel.matches("myapp.vendored", "f")
    assert not sel.matches("myapp.vendored.deep", "C.m")
    assert not sel.matches("myapp.db", "Repo.secret_key")
    assert sel.matches("myapp.db", "Repo.save")
    assert not sel.may_contain("myapp.vendored")


@pytest.mark.parametrize("module", ["autotrace.core", "opentelemetry.trace", "wrapt",
                                    "importlib.util", "_frozen_importlib"])
def test_own_machinery_is_never_traced_whatever_the_patterns(module: str) -> None:
    sel = _selector(["*", module])
    assert not sel.may_contain(module)
    assert not sel.matches(module, "anything")


def test_stdlib_only_when_named_literally() -> None:
    assert not _selector(["*"]).may_contain("json")
    assert not _selector(["*"]).matches("json.decoder", "JSONDecoder.decode")
    assert _selector(["json"]).matches("json.decoder", "JSONDecoder.decode")
    assert _selector(["*"]).matches("myapp", "f")


def test_module_filter_is_precise() -> None:
    sel = _selector(["myapp.db.Repo"])
    assert sel.may_contain("myapp")  # a parent package may define names below it
    assert sel.may_contain("myapp.db")
    assert not sel.may_contain("myapp.web")
    assert not sel.may_contain("myappx")


def test_only_selected_functions_of_a_module_are_traced(traced: Traced) -> None:
    name = traced.modules.module("mod", """
        def keep(): return 1
        def drop(): return 2
        class Repo:
            def save(self): return 3
            def load(self): return 4
    """)
    traced.install([f"{name}.keep", f"{name}.Repo.save"])
    mod = __import__(name)
    mod.keep(), mod.drop(), mod.Repo().save(), mod.Repo().load()
    assert traced.names() == ["keep", "Repo.save"]


def test_exclude_integration(traced: Traced) -> None:
    name = traced.modules.module("mod", """
        def a(): return 1
        def hot_b(): return 2
    """)
    traced.install([name], exclude=[f"{name}.hot_*"])
    mod = __import__(name)
    mod.a(), mod.hot_b()
    assert traced.names() == ["a"]


def test_no_trace_opts_out_functions_methods_and_classes(traced: Traced) -> None:
    mod = traced.load("mod", """
        import autotrace
        @autotrace.no_trace
        def hidden(): return 1
        def shown(): return hidden()
        class C:
            @autotrace.no_trace
            def m(self): return 2
            @autotrace.no_trace
            @staticmethod
            def s(): return 3
            @staticmethod
            @autotrace.no_trace
            def s2(): return 4
            def n(self): return 5
        @autotrace.no_trace
        class Hidden:
            def m(self): return 6
    """)
    assert mod.shown() == 1
    c = mod.C()
    assert (c.m(), c.s(), c.s2(), c.n(), mod.Hidden().m()) == (2, 3, 4, 5, 6)
    assert sorted(traced.names()) == ["C.n", "shown"]
