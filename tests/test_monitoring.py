"""The sys.monitoring backend specifically: tool ids, event scope, coexistence, faults."""

from __future__ import annotations

import cProfile
import importlib
import os
import pstats
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import autotrace

from .conftest import Modules, Traced

pytestmark = pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is 3.12+")

SOURCE = '''
def traced_fn(x):
    return x + 1

def excluded_fn(x):
    return x - 1

def raises_untraced():
    raise KeyError("k")

def raises_traced():
    raise ValueError("v")

def gen():
    yield 1
'''


def _tool_of_autotrace() -> int:
    for tool in range(6):
        if sys.monitoring.get_tool(tool) == "autotrace":
            return tool
    raise AssertionError("autotrace holds no tool id")


@pytest.fixture
def backend() -> str:
    """This module is about one backend: no parametrization."""
    return "monitoring"


@pytest.fixture
def mon(traced: Traced) -> Traced:
    return traced


def test_local_events_only_on_matching_code(mon: Traced) -> None:
    name = mon.modules.module("mod", SOURCE)
    mon.install([name], exclude=[f"{name}.excluded_fn", f"{name}.raises_untraced"])
    mod = importlib.import_module(name)
    tool = _tool_of_autotrace()
    events = sys.monitoring.events
    call = events.PY_START | events.PY_RETURN
    suspend = events.PY_YIELD | events.PY_RESUME
    if sys.version_info >= (3, 15):  # exception events are local too: nothing is global
        call |= events.PY_UNWIND
        suspend |= events.PY_THROW
        assert sys.monitoring.get_events(tool) == 0
    else:  # only the two events that cannot be local are global
        assert sys.monitoring.get_events(tool) == events.PY_UNWIND | events.PY_THROW
    assert sys.monitoring.get_local_events(tool, mod.traced_fn.__code__) == call
    assert sys.monitoring.get_local_events(tool, mod.gen.__code__) == call | suspend
    assert sys.monitoring.get_local_events(tool, mod.excluded_fn.__code__) == 0
    assert sys.monitoring.get_local_events(tool, mod.raises_untraced.__code__) == 0


def test_global_events_leave_untraced_code_alone(mon: Traced) -> None:
    name = mon.modules.module("mod", SOURCE)
    mon.install([name], exclude=[f"{name}.raises_untraced"])
    mod = importlib.import_module(name)
    for _ in range(3):  # a DISABLE returned from PY_UNWIND would raise ValueError here
        with pytest.raises(KeyError):
            mod.raises_untraced()
        with pytest.raises(ValueError, match="v"):
            mod.raises_traced()
    assert mon.names() == ["raises_traced"] * 3


def test_prefers_conventionally_free_tool_ids(mon: Traced) -> None:
    mon.install(["nothing_matches_here"])
    assert _tool_of_autotrace() == 3
    autotrace.uninstall()
    mon.installation = None
    sys.monitoring.use_tool_id(3, "someone-else")
    try:
        mon.install(["nothing_matches_here"])
        assert _tool_of_autotrace() == 4
    finally:
        autotrace.uninstall()
        sys.monitoring.free_tool_id(3)


def test_no_free_tool_id_is_a_clear_error(mon: Traced) -> None:
    claimed = []
    for tool in range(6):
        if sys.monitoring.get_tool(tool) is None:
            sys.monitoring.use_tool_id(tool, f"squatter-{tool}")
            claimed.append(tool)
    meta_path = list(sys.meta_path)
    try:
        with pytest.raises(RuntimeError, match="tool id") as info:
            mon.install(["x"])
        assert "backend='wrapt'" in str(info.value)
        assert autotrace.active_installation() is None and sys.meta_path == meta_path
    finally:
        for tool in claimed:
            sys.monitoring.free_tool_id(tool)


def test_coexists_with_cprofile(mon: Traced) -> None:
    mod = mon.load("mod", SOURCE)
    profiler = cProfile.Profile()
    assert profiler.runcall(mod.traced_fn, 1) == 2
    stats = pstats.Stats(profiler)
    assert any(func[2] == "traced_fn" for func in stats.stats)  # type: ignore[attr-defined]
    assert mon.names() == ["traced_fn"]


def test_coexists_with_coverage_sysmon_core(modules: Modules, tmp_path: Path) -> None:
    pytest.importorskip("coverage")
    name = modules.module("covered", SOURCE)
    script = tmp_path / "run_cov.py"
    script.write_text(textwrap.dedent(f'''
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import autotrace
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        autotrace.install([{name!r}], backend="monitoring", tracer_provider=provider)
        import {name} as mod
        assert mod.traced_fn(1) == 2
        print("spans", [s.name for s in exporter.get_finished_spans()])
    '''))
    env = dict(os.environ, COVERAGE_CORE="sysmon",
               PYTHONPATH=os.pathsep.join([str(modules.root), os.environ.get("PYTHONPATH", "")]))
    data = tmp_path / ".coverage"
    out = subprocess.run([sys.executable, "-m", "coverage", "run", f"--data-file={data}",
                          f"--include={modules.root}/*", str(script)],
                         capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "spans ['traced_fn']" in out.stdout
    report = subprocess.run([sys.executable, "-m", "coverage", "report", f"--data-file={data}",
                             "-m"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert name in report.stdout, report.stdout + report.stderr


def test_generator_closed_without_events_still_ends(mon: Traced) -> None:
    mod = mon.load("gen", '''
def numbers():
    yield 1
    yield 2
''')
    gen = mod.numbers()
    assert next(gen) == 1
    gen.close()
    del gen
    span = mon.span("numbers")
    assert span.end_time is not None


def test_many_functions_and_generators_are_each_found_by_their_own_code(mon: Traced) -> None:
    """The compiled callbacks keep the code objects they have described in a table that
    grows (64 slots first): 150 functions and 30 generators, each called twice (the
    second call is found in the table), each call its own function's span."""
    source = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(150))
    source += "".join(f"def g{i}(n):\n    for k in range(n):\n        yield k + {i}\n\n"
                      for i in range(30))
    mod = mon.load("many", source)
    for _ in range(2):
        assert [getattr(mod, f"f{i}")(1) for i in range(150)] == [1 + i for i in range(150)]
        assert [list(getattr(mod, f"g{i}")(2)) for i in range(30)] == [
            [i, i + 1] for i in range(30)]
    names = mon.names()
    expected = [f"f{i}" for i in range(150)] + [f"g{i}" for i in range(30)]
    assert sorted(names) == sorted(expected * 2)
    assert all(s.end_time is not None for s in mon.spans())


PLAIN_AND_NOT = '''
import functools
from os.path import join                    # a re-export: another module's
from autotrace import no_trace

def plain(x):                               # the common case: registered in C
    return x + 1

def _private(x):
    return x

def outer(x):                               # defines code of its own: Python walks it
    def inner(y):
        return y
    return inner(x)

def gen():                                  # a generator: suspend events too
    yield 1

async def coro():
    return 1

@no_trace
def hidden(x):                              # marked in its __dict__
    return x

def decorated_impl(x):
    return x

@functools.wraps(decorated_impl)
def wrapper(*args):                         # __wrapped__: the wrapped code is traced
    return decorated_impl(*args)

def with_attribute(x):
    return x
with_attribute.note = "an attribute, not a mark"

def unwrapped_impl(x):
    return x

def unwrapping(x):                          # __wrapped__ set by hand, its own qualname
    return unwrapped_impl(x)
unwrapping.__wrapped__ = unwrapped_impl

def marked(x):                              # the mark alone, its code not remembered
    return x
marked.__autotrace_no_trace__ = True

def __dunder__(x):                          # a top-level dunder: never traced
    return x

def __mangled(x):                           # starts with "__" only: traced
    return x

alias = plain                               # the same function under a second name
lam = lambda x: x                           # "<lambda>" is never traced

def renamed(x):
    return x
renamed.__qualname__ = "elsewhere"          # not defined where it is found

made = eval("lambda: 1")                    # generated code ("<string>")
exec("def generated(x):\\n    return x")

class Box:
    def method(self, x):
        return x
'''


def test_a_module_s_functions_get_the_same_events_from_either_core(mon: Traced,
                                                                   core: str) -> None:
    """The compiled registration of a module's plain functions (backends/_monitoring.c)
    takes only what the Python loops would register the same way and hands the rest
    back: every kind of namespace entry ends with the same local events on both cores."""
    name = mon.modules.module("kinds", PLAIN_AND_NOT)
    installation = mon.install([name])
    mod = importlib.import_module(name)
    backend = installation._backend  # type: ignore[attr-defined]
    compiled = backend._register_plain is not None
    assert compiled == (core == "compiled")  # the C path runs where it should, only there
    tool = _tool_of_autotrace()
    events = sys.monitoring.events
    call = events.PY_START | events.PY_RETURN
    suspend = events.PY_YIELD | events.PY_RESUME
    if sys.version_info >= (3, 15):
        call |= events.PY_UNWIND
        suspend |= events.PY_THROW
    outer_inner = next(c for c in mod.outer.__code__.co_consts if hasattr(c, "co_qualname"))
    codes = {
        "plain": mod.plain.__code__, "_private": mod._private.__code__,
        "outer": mod.outer.__code__, "outer.<locals>.inner": outer_inner,
        "gen": mod.gen.__code__, "coro": mod.coro.__code__,
        "hidden": mod.hidden.__code__, "decorated_impl": mod.decorated_impl.__code__,
        "wrapper": mod.wrapper.__code__, "with_attribute": mod.with_attribute.__code__,
        "unwrapping": mod.unwrapping.__code__, "unwrapped_impl": mod.unwrapped_impl.__code__,
        "marked": mod.marked.__code__,
        "__dunder__": mod.__dunder__.__code__, "__mangled": mod.__mangled.__code__,
        "lam": mod.lam.__code__, "renamed": mod.renamed.__code__,
        "made": mod.made.__code__, "generated": mod.generated.__code__,
        "Box.method": mod.Box.method.__code__,
    }
    got = {key: sys.monitoring.get_local_events(tool, code) for key, code in codes.items()}
    assert got == {
        "plain": call, "_private": call, "outer": call, "outer.<locals>.inner": call,
        "gen": call | suspend, "coro": call | suspend, "hidden": 0,
        "decorated_impl": call, "wrapper": 0, "with_attribute": call, "unwrapping": 0,
        "unwrapped_impl": call, "marked": 0, "__dunder__": 0,
        "__mangled": call, "lam": 0, "renamed": 0, "made": 0, "generated": 0,
        "Box.method": call,
    }
    assert installation.matched == 11
    mod.coro().close()
    assert mod.plain(1) == 2 and mod.alias(2) == 3 and mod.wrapper(4) == 4
    assert mod.unwrapping(5) == 5 and mod.marked(6) == 6
    assert mon.names() == ["plain", "plain", "decorated_impl", "unwrapped_impl"]


def test_a_module_partly_selected_registers_only_what_its_patterns_select(
        mon: Traced, core: str) -> None:
    """The compiled registration is for a module selected whole; under a pattern that
    names some functions, or an exclude inside the module, the Python loops decide."""
    name = mon.modules.module("partly", PLAIN_AND_NOT)
    mon.install([f"{name}.p*", f"{name}.Box"], exclude=[f"{name}.plain"])
    mod = importlib.import_module(name)
    tool = _tool_of_autotrace()
    assert sys.monitoring.get_local_events(tool, mod.plain.__code__) == 0
    assert sys.monitoring.get_local_events(tool, mod.Box.method.__code__) != 0
    assert sys.monitoring.get_local_events(tool, mod._private.__code__) == 0
    assert mod.plain(1) == 2 and mod.Box().method(3) == 3
    assert mon.names() == ["Box.method"]


def test_a_module_off_limits_is_not_registered_through_an_alias(core: str) -> None:
    """``sys.modules`` may hold a module under a second name (``requests.packages``
    does): found under an alias the patterns reach, a module that is never traced by its
    own name (here the standard library's ``colorsys`` under ``c*``) stays untraced on
    both cores, the compiled registration included."""
    program = textwrap.dedent(f"""
        import sys, colorsys
        sys.modules["calias_for_test"] = colorsys
        import autotrace
        from opentelemetry.sdk.trace import TracerProvider
        autotrace.install(["calias_for_test", "c*"], backend="monitoring", core={core!r},
                          tracer_provider=TracerProvider())
        tool = next(t for t in range(6) if sys.monitoring.get_tool(t) == "autotrace")
        print(sys.monitoring.get_local_events(tool, colorsys.rgb_to_hsv.__code__))
    """)
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0", out.stdout
