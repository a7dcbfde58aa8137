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
