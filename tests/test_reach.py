"""Where each backend reaches: closures, __main__, early references, deep recursion.

These are the documented differences between the backends: sys.monitoring
selects code objects, so it sees everything that runs matching code; wrapt can
only replace attributes it finds after a module has run.
"""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from types import FunctionType

import pytest

import autotrace

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


def test_closures_are_reached(traced: Traced) -> None:
    mod = traced.load("reach", REACH)
    traced.clear()  # the module body called register()
    assert mod.outer(4) == 8
    assert traced.names() == ["outer.<locals>.inner", "outer"]
    assert traced.args("outer.<locals>.inner") == {"x": 4}
    assert traced.attrs("outer.<locals>.inner")["code.line.number"] == 13


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
    traced.clear()
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
    else:  # wrapt: the running script was compiled before install(); use the command
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
    assert "spans ['helper', 'main']" in out.stdout


IMPORT_TIME = '''
import pickle, threading

HANDLERS = {}

def register(func):
    HANDLERS[func.__name__] = func
    return func

@register
def on_event(x):
    return x + 1

def do_upper(s):
    return s.upper()

FILTERS = {"upper": do_upper}
alias = do_upper

def apply(s, f=do_upper):
    return f(s)

def worker(out):
    out.append("ran")

OUT = []
THREAD = threading.Thread(target=worker, args=(OUT,))

class Shop:
    @staticmethod
    @register
    def build():
        return "built"
'''


def test_references_taken_while_the_module_runs(traced: Traced) -> None:
    """Registries, module-level data, aliases, defaults and Thread targets hold the
    traced function: it was wrapped as it was defined."""
    mod = traced.load("early", IMPORT_TIME)
    traced.clear()
    assert mod.HANDLERS["on_event"](1) == 2
    assert mod.FILTERS["upper"]("a") == "A" and mod.alias("b") == "B"
    assert mod.apply.__defaults__[0]("c") == "C"
    mod.THREAD.start()
    mod.THREAD.join()
    assert mod.OUT == ["ran"] and mod.HANDLERS["build"]() == "built"
    assert traced.names() == ["on_event", "do_upper", "do_upper", "do_upper", "worker",
                              "Shop.build"]
    assert mod.alias is mod.do_upper and mod.FILTERS["upper"] is mod.do_upper
    # item 19: module-level data that holds the function still pickles by reference
    assert pickle.loads(pickle.dumps(mod.FILTERS))["upper"] is mod.do_upper


def test_calls_made_while_the_module_runs_are_traced(traced: Traced) -> None:
    traced.load("early", IMPORT_TIME)
    # monitoring enables its events on the module's code once the body has run
    expected = ["register", "register"] if traced.backend == "wrapt" else []
    assert traced.names() == expected


def test_uninstall_restores_functions_wrapped_as_defined(traced: Traced) -> None:
    mod = traced.load("early", IMPORT_TIME)
    autotrace.uninstall()
    traced.clear()
    assert type(mod.do_upper) is FunctionType and type(mod.alias) is FunctionType
    assert type(vars(mod.Shop)["build"]) is staticmethod
    assert type(vars(mod.Shop)["build"].__func__) is FunctionType
    # what registries hold passes through untraced
    assert mod.FILTERS["upper"]("a") == "A" and mod.HANDLERS["on_event"](1) == 2
    assert traced.names() == []
    importlib.reload(mod)
    assert type(mod.FILTERS["upper"]) is FunctionType and traced.names() == []


def test_run_path_modules_are_traced(traced: Traced, tmp_path: Path) -> None:
    """``runpy.run_path``: what multiprocessing's spawn workers run as ``__mp_main__``."""
    import runpy

    name = traced.modules.name("script")
    path = tmp_path / f"{name}.py"
    path.write_text("REGISTRY = []\n\ndef work(x):\n    return x + 1\n\n"
                    "REGISTRY.append(work)\nRESULT = work(1)\n")
    if traced.backend == "monitoring":
        pytest.xfail("the monitoring backend does not hook runpy.run_path")
    traced.install([name])
    namespace = runpy.run_path(str(path), run_name="__mp_main__")
    assert namespace["RESULT"] == 2 and namespace["REGISTRY"][0](2) == 3
    assert traced.names() == ["work", "work"]
    attrs = dict(traced.spans()[0].attributes or {})
    assert attrs["code.function.name"] == f"{name}.work"
