"""What gets traced: a module's own functions and methods, found at import or install."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import autotrace

from .conftest import Modules, Traced

CLASSES = '''
import functools
from os.path import join  # a re-export: never traced

def top(x):
    return x

class Shape:
    kind = "shape"
    __hash__ = None

    def __init__(self, size):
        self.size = size

    def __call__(self):
        return self.size

    def __repr__(self):
        return "Shape()"

    def __eq__(self, other):
        return isinstance(other, Shape) and other.size == self.size

    def area(self):
        return self.size ** 2

    @classmethod
    def unit(cls):
        return cls(1)

    @staticmethod
    def describe(n):
        return f"shape {n}"

    @property
    def double(self):
        return self.size * 2

    @double.setter
    def double(self, value):
        self.size = value / 2

    @functools.cached_property
    def cached(self):
        return self.size + 100

    class Inner:
        def deep(self):
            return "deep"

        class Deeper:
            def deepest(self):
                return "deepest"
'''


def test_functions_methods_and_descriptors(traced: Traced) -> None:
    mod = traced.load("shapes", CLASSES)
    s = mod.Shape(3)
    assert s() == 3 and s.area() == 9 and mod.Shape.unit().size == 1
    assert mod.Shape.describe(2) == "shape 2" and s.describe(4) == "shape 4"
    assert s.double == 6
    s.double = 10
    assert s.size == 5
    assert s.cached == 105 and s.cached == 105  # cached: the second read makes no span
    assert mod.Shape.Inner().deep() == "deep"
    assert mod.Shape.Inner.Deeper().deepest() == "deepest"
    assert mod.top(1) == 1
    assert mod.join("a", "b") == "a/b"
    assert repr(s) == "Shape()" and s == mod.Shape(5)
    assert sorted(traced.names()) == sorted([
        "Shape.__init__", "Shape.__call__", "Shape.area", "Shape.__init__", "Shape.unit",
        "Shape.describe", "Shape.describe", "Shape.double", "Shape.double", "Shape.cached",
        "Shape.Inner.deep", "Shape.Inner.Deeper.deepest", "top", "Shape.__init__",
    ])
    assert traced.args("Shape.unit") == {}
    setter = [sp for sp in traced.spans() if sp.name == "Shape.double"][1]
    assert dict(setter.attributes or {})["code.function.parameters.value.value"] == 10


def test_modules_imported_before_install_are_instrumented_in_place(traced: Traced) -> None:
    name = traced.modules.module("early", "def f(x):\n    return x + 1\n")
    early = importlib.import_module(name)
    captured = early.f  # a reference taken before install()
    traced.install()
    assert early.f(1) == 2
    assert traced.names() == ["f"]
    traced.clear()
    assert captured(1) == 2
    # wrapt cannot reach references taken earlier; sys.monitoring traces the code itself
    assert traced.names() == ([] if traced.backend == "wrapt" else ["f"])


def test_reload_reinstruments(traced: Traced) -> None:
    mod = traced.load("reloaded", "def f():\n    return 1\n")
    mod.f()
    path = Path(mod.__file__)
    path.write_text("def f():\n    return 2\n\ndef g():\n    return 3\n")
    importlib.invalidate_caches()
    reloaded = importlib.reload(mod)
    assert reloaded.f() == 2 and reloaded.g() == 3
    assert traced.names() == ["f", "f", "g"]


def test_packages_submodules_and_from_imports_between_traced_modules(traced: Traced) -> None:
    pkg = traced.modules.package("pkg", {
        "__init__.py": "from .util import helper\n\ndef entry(x):\n    return helper(x) * 2\n",
        "util.py": "def helper(x):\n    return x + 1\n",
    })
    traced.install([pkg])
    mod = importlib.import_module(pkg)
    assert mod.entry(1) == 4
    assert sorted(traced.names()) == ["entry", "helper"]
    util = importlib.import_module(pkg + ".util")
    assert traced.span("helper").attributes["code.function.name"] == f"{util.__name__}.helper"


def test_resources_and_getsource_inside_traced_modules(traced: Traced) -> None:
    pkg = traced.modules.package("res", {
        "__init__.py": '''
import importlib.resources, inspect
DATA = importlib.resources.files(__name__).joinpath("data.txt").read_text()
def source():
    return inspect.getsource(source)
''',
        "data.txt": "payload",
    })
    traced.install([pkg])
    mod = importlib.import_module(pkg)
    assert mod.DATA == "payload"
    assert mod.source().startswith("def source():")
    assert type(mod.__loader__).__name__ != "LoaderProxy"
    assert type(mod.__spec__.loader).__name__ != "LoaderProxy"


def test_threads_importing_the_same_module_get_it_wrapped_once(traced: Traced) -> None:
    name = traced.modules.module("slow", """
import time
time.sleep(0.2)
def f():
    return 1
""")
    traced.install()
    results: list[object] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        module = importlib.import_module(name)
        results.append(module.f)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(f) for f in results}) == 1
    assert sys.modules[name].f() == 1
    assert traced.names() == ["f"]  # one span, not a span per wrapper layer


def test_a_module_that_fails_to_import_still_fails_the_same_way(traced: Traced) -> None:
    name = traced.modules.module("broken", "def f():\n    return 1\nraise ImportError('nope')\n")
    traced.install()
    for _ in range(2):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            assert str(exc) == "nope"
        else:
            raise AssertionError("import should fail")


def test_python_dash_m_runs_a_traced_package_module(modules: Modules, backend: str,
                                                   tmp_path: Path) -> None:
    """A real ``python -m pkg.main`` with autotrace installed from sitecustomize."""
    pkg = modules.package("cli", {
        "__init__.py": "",
        "helpers.py": "def double(x):\n    return x * 2\n",
        "main.py": '''
import importlib.resources
from . import helpers
def run():
    return helpers.double(21)
if __name__ == "__main__":
    print("result", run())
''',
    })
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "sitecustomize.py").write_text(f'''
import atexit
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import autotrace
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
autotrace.install([{pkg!r}], backend={backend!r}, tracer_provider=provider)
atexit.register(lambda: print("spans", sorted(s.name for s in exporter.get_finished_spans())))
''')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(boot), str(modules.root)]))
    out = subprocess.run([sys.executable, "-m", f"{pkg}.main"], cwd=tmp_path, text=True,
                         capture_output=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "result 42" in out.stdout
    assert "'double'" in out.stdout
    assert "'run'" in out.stdout  # defined in the module run as __main__
    assert out.stderr == ""


def test_circular_imports_between_traced_modules(traced: Traced) -> None:
    pkg = traced.modules.package("circ", {
        "__init__.py": "",
        "a.py": "def f(x):\n    return x + 1\n\nfrom . import b\n",
        "b.py": "from .a import f  # runs while a is half-initialised\n\n"
                "def g(x):\n    return f(x) * 2\n",
    })
    traced.install([pkg])
    importlib.import_module(pkg + ".a")  # a starts, imports b, b takes a's raw f
    b = sys.modules[pkg + ".b"]
    assert b.g(1) == 4
    assert sorted(traced.names()) == ["f", "g"]  # f is traced through b's alias too
    autotrace.uninstall()
    assert b.f is sys.modules[pkg + ".a"].f  # both restored to the raw function
    assert not hasattr(b.f, "__wrapped__")


def test_module_that_replaces_itself_in_sys_modules(traced: Traced, caplog) -> None:
    name = traced.modules.module("replaced", """
import sys
class _Facade:
    answer = 42
    def f(self):
        return 1
sys.modules[__name__] = _Facade()
""")
    traced.install()
    with caplog.at_level("WARNING", logger="autotrace"):
        facade = importlib.import_module(name)
    assert facade.answer == 42 and facade.f() == 1
    assert not [r for r in caplog.records if r.name == "autotrace"]
