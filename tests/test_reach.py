"""Where each backend reaches: closures, __main__, early references, deep recursion.

These are the documented differences between the backends: sys.monitoring
selects code objects, so it sees everything that runs matching code; wrapt can
only replace attributes it finds after a module has run.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from .conftest import Modules, Traced

REACH = '''
HANDLERS = {}

def register(func):
    HANDLERS[func.__name__] = func
    return func

@register
def on_event(x):
    return x + 1

def outer(n):
    def inner(x):
        return x * 2
    helper = lambda y: y  # lambdas are never traced
    return inner(helper(n))

def recurse(n):
    return 0 if n == 0 else 1 + recurse(n - 1)
'''


def test_closures_are_reached_by_monitoring_only(traced: Traced) -> None:
    mod = traced.load("reach", REACH)
    assert mod.outer(4) == 8
    expected = ["outer.<locals>.inner", "outer"] if traced.backend == "monitoring" \
        else ["outer"]
    assert traced.names() == expected
    if traced.backend == "monitoring":
        assert traced.args("outer.<locals>.inner") == {"x": 4}


def test_references_taken_before_install(traced: Traced, modules: Modules) -> None:
    name = modules.module("early", REACH)
    user = modules.module("user", f"from {name} import on_event as alias, HANDLERS\n")
    early = importlib.import_module(name)
    users = importlib.import_module(user)
    traced.install([name])
    assert users.alias(1) == 2 and users.HANDLERS["on_event"](2) == 3 and early.on_event(0) == 1
    # wrapt replaces only the module attribute; monitoring traces the code itself
    count = 3 if traced.backend == "monitoring" else 1
    assert traced.names() == ["on_event"] * count


def test_deep_recursion(traced: Traced) -> None:
    mod = traced.load("reach", REACH)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        if traced.backend == "monitoring":
            # no extra frames: what recurses to depth 900 untraced still does traced
            assert mod.recurse(900) == 900
            assert len(traced.spans()) == 901
        else:
            # each traced level adds wrapper frames: a third of the depth is the budget
            assert mod.recurse(300) == 300
            assert len(traced.spans()) == 301
    finally:
        sys.setrecursionlimit(limit)
    spans = traced.spans()
    by_id = {s.context.span_id: s for s in spans}
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == 1
    depth, span = 0, min(spans, key=lambda s: s.start_time)
    children = {s.parent.span_id: s for s in spans if s.parent is not None}
    while span.context.span_id in children:
        span = children[span.context.span_id]
        depth += 1
    assert depth == len(spans) - 1 and all(s.parent.span_id in by_id for s in spans
                                           if s.parent is not None)


def test_main_script_that_installs_autotrace_itself(backend: str, tmp_path: Path) -> None:
    """``install()`` on the first lines of ``app.py``; the script's functions follow."""
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(f'''
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import autotrace
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        autotrace.install(["app"], backend={backend!r}, tracer_provider=provider)

        def work(x):
            def step(y):
                return y + 1
            return step(x) * 2

        if __name__ == "__main__":
            print("result", work(1))
            print("spans", sorted(s.name for s in exporter.get_finished_spans()))
    '''))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "result 4" in out.stdout
    if backend == "monitoring":
        assert "spans ['work', 'work.<locals>.step']" in out.stdout
    else:  # wrapt cannot wrap what is defined after install() in a running module
        assert "spans []" in out.stdout


def test_compile_main_traces_a_script_run_through_it(backend: str, tmp_path: Path) -> None:
    """The hook the ``autotrace`` command uses to run ``python app.py``."""
    script = tmp_path / "job.py"
    script.write_text("def main():\n    return helper() + 1\n\ndef helper():\n    return 41\n"
                      "\nRESULT = main()\n")
    runner = tmp_path / "runner.py"
    runner.write_text(textwrap.dedent(f'''
        import sys, types
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import autotrace
        from autotrace.core import compile_main
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        autotrace.install(["job"], backend={backend!r}, tracer_provider=provider)
        path = {str(script)!r}
        module = types.ModuleType("__main__")
        module.__file__ = path
        code = compile_main(open(path).read(), path, "__main__")
        exec(code, module.__dict__)
        print("result", module.RESULT)
        print("spans", sorted(s.name for s in exporter.get_finished_spans()))
    '''))
    out = subprocess.run([sys.executable, str(runner)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert "result 42" in out.stdout
    if backend == "monitoring":
        assert "spans ['helper', 'main']" in out.stdout
