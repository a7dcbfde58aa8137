"""Which names a pattern selects, and what is never traced."""

from __future__ import annotations

import sys
import textwrap
from typing import Any

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


_RULES_SOURCE = """
    import functools
    import autotrace

    def __(message): return message            # gettext's alias: a name, not a dunder
    class C:
        def __init__(self): self.x = 1
        def __call__(self): return 2
        def __repr__(self): return "C()"
        @autotrace.no_trace
        @functools.cached_property
        def hidden(self): return 3
        @functools.cached_property
        def shown(self): return 4
"""


@pytest.mark.parametrize("imported", ["after install", "before install"])
def test_each_rule_holds_on_every_route(traced: Traced, imported: str) -> None:
    """The dunder rule and opting out answer alike on both backends, whether a module
    is rewritten as it is imported (wrapt) or walked after its body ran."""
    name = traced.modules.module("rules", _RULES_SOURCE)
    if imported == "before install":
        __import__(name)
        traced.install()
    mod = traced.load("rules", _RULES_SOURCE) if imported == "after install" else \
        __import__(name)
    c = mod.C()
    assert (mod.__("hi"), c(), repr(c), c.hidden, c.shown) == ("hi", 2, "C()", 3, 4)
    assert sorted(traced.names()) == ["C.__call__", "C.__init__", "C.shown", "__"]


def test_the_selector_answers_for_objects_source_and_code() -> None:
    """Each form a backend holds (an object, a ``def`` not yet run, a code object) is
    asked through the one ``Selector``, and its rules agree across the forms."""
    import ast

    import autotrace

    sel = _selector(["app"])
    source = textwrap.dedent("""
        def f(): pass
        def __repr__(): pass
        class C:
            def __init__(self): pass
            def __eq__(self, other): pass
            def g(self):
                def __init__(): pass
                return __init__
        @no_trace
        def hidden(): pass
        @no_trace
        class Hidden:
            def m(self): pass
    """)
    namespace: dict[str, Any] = {"no_trace": autotrace.no_trace}
    exec(compile(source, "app.py", "exec"), namespace)
    tree = ast.parse(source)
    nodes = {node.name: node for node in ast.walk(tree)
             if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    C = namespace["C"]
    closure = C.g(C())
    cases = [  # qualname, object, def node, in a class, code, expected
        ("f", namespace["f"], nodes["f"], False, True),
        ("__repr__", namespace["__repr__"], nodes["__repr__"], False, False),
        ("C.__init__", C.__init__, nodes["__init__"], True, True),
        ("C.__eq__", C.__eq__, nodes["__eq__"], True, False),
        ("hidden", namespace["hidden"], nodes["hidden"], False, False),
    ]
    has_qualname = sys.version_info >= (3, 11)
    for qualname, obj, node, in_class, expected in cases:
        assert sel.function_selected("app", qualname, obj) is expected, qualname
        assert sel.def_selected("app", qualname, node, in_class) is expected, qualname
        if has_qualname:  # code objects know their qualname from 3.11 (monitoring: 3.12+)
            assert sel.code_selected("app", obj.__code__) is expected, qualname
        assert not sel.function_selected("other", qualname, obj)
    # A closure's __init__ is no method: skipped as a module-level one is.
    assert not sel.function_selected("app", closure.__qualname__, closure)
    assert not has_qualname or not sel.code_selected("app", closure.__code__)
    assert not sel.def_selected("app", closure.__qualname__, nodes["g"].body[0], False)
    assert not sel.class_selected("app", "Hidden", namespace["Hidden"])
    assert not sel.def_selected("app", "Hidden", nodes["Hidden"], False)
    assert sel.class_selected("app", "C", C)
    assert sel.def_selected("app", "C", nodes["C"], False)


def test_no_trace_on_a_nested_def_holds(traced: Traced) -> None:
    """A nested def is opted out when its enclosing function runs, after its module was
    imported and its code selected (monitoring): the opt-out holds from then on."""
    mod = traced.load("nested", """
        import autotrace
        def outer():
            @autotrace.no_trace
            def inner(): return 1
            def shown(): return 2
            return inner() + shown()
    """)
    assert (mod.outer(), mod.outer()) == (3, 3)
    assert sorted(traced.names()) == ["outer", "outer", "outer.<locals>.shown",
                                      "outer.<locals>.shown"]


def test_no_trace_opts_out_that_code_not_equal_code(traced: Traced) -> None:
    """Two modules with the same function at the same line have equal code objects; the
    opt-out of one must not reach the other (the monitoring backend selects by code)."""
    source = "import autotrace\n@{}\ndef f(): return 1\n"
    hidden = traced.load("twin_a", source.format("autotrace.no_trace"))
    shown = traced.load("twin_b", source.format("(lambda f: f)"))
    assert hidden.f.__code__ == shown.f.__code__  # what the rule must not go by
    assert (hidden.f(), shown.f()) == (1, 1)
    assert traced.names() == ["f"]
    assert str(traced.spans()[0].attributes["code.function.name"]).startswith(
        shown.__name__ + ".")


@pytest.mark.parametrize(("patterns", "exclude"), [
    (["app"], []),                 # the whole module: no pattern match per name
    (["app.f*"], []),              # some names
    (["app"], ["app.fo*"]),        # the whole module less an exclude
    (["other"], []),               # nothing here
])
def test_a_module_s_functions_asked_together_get_the_answers_asked_one_at_a_time(
        patterns: list[str], exclude: list[str]) -> None:
    """``module_functions_selected`` (a module's plain functions in one loop, as a
    traced module is imported) answers as ``function_selected`` does for each one."""
    import autotrace

    sel = _selector(patterns, exclude)
    namespace: dict[str, Any] = {"no_trace": autotrace.no_trace}
    exec(compile(textwrap.dedent("""
        def f(): pass
        def foo(): pass
        def bar(): pass
        def _private(): pass
        def __repr__(): pass
        def __x(): pass
        @no_trace
        def fhidden(): pass
    """), "app.py", "exec"), namespace)
    found = [(name, value) for name, value in namespace.items()
             if callable(value) and name != "no_trace"]
    assert len(found) == 7
    expected = [func for name, func in found if sel.function_selected("app", name, func)]
    assert sel.module_functions_selected("app", found) == expected
    assert sel.module_functions_selected("autotrace", found) == []
    if patterns == ["app"] and not exclude:
        assert [func.__name__ for func in expected] == ["f", "foo", "bar", "_private",
                                                         "__x"]
