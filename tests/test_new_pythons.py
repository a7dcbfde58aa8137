"""What Python 3.14 and 3.15 changed where autotrace meets it, on both backends.

3.14: deferred annotations (PEP 649/749), template strings (PEP 750). 3.15: modules
without ``__cached__``, ``SourceLoader.source_to_code(data, path, fullname)`` and
``compile(..., module=)``, explicit and global lazy imports (PEP 810). The monitoring
backend's use of 3.15's local exception events is in ``test_monitoring.py``. Source
with new syntax lives only in module files, so this file imports on every version.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import runpy
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from .clihelp import AUTOTRACE, clean_env, run, tree_lines, write
from .conftest import Traced

needs_314 = pytest.mark.skipif(sys.version_info < (3, 14), reason="Python 3.14+")
needs_315 = pytest.mark.skipif(sys.version_info < (3, 15), reason="Python 3.15+")

# -- 3.15: no __cached__ ------------------------------------------------------------------

GLOBALS = '''
def names():
    return sorted(k for k in globals() if k.startswith("__"))

print(names(), globals().get("__cached__", "absent"))
'''


def test_a_traced_script_gets_the_globals_the_interpreter_gives(tmp_path: Path,
                                                               backend: str) -> None:
    """The main script is run by autotrace (``loading/mainscript.py``): it sets
    ``__cached__`` only where the interpreter does (up to 3.14)."""
    write(tmp_path, "show.py", GLOBALS)
    traced = run([*AUTOTRACE, "-p", "show", "--backend", backend, sys.executable, "show.py"],
                 tmp_path)
    native = run([sys.executable, "show.py"], tmp_path)
    assert traced.returncode == native.returncode == 0, traced.stderr
    assert traced.stdout == native.stdout
    assert ("'__cached__'" in native.stdout) == (sys.version_info < (3, 15))
    assert tree_lines(traced.stderr)[0].startswith("  names() -> ")


# -- 3.15: source_to_code(data, path, fullname) -------------------------------------------

def _finder_for(name: str, origin: Path, loader: Any) -> Any:
    class Finder:
        @staticmethod
        def find_spec(fullname: str, path: Any = None, target: Any = None) -> Any:
            if fullname != name:
                return None
            return importlib.util.spec_from_file_location(fullname, str(origin),
                                                          loader=loader(fullname, str(origin)))
    return Finder


def test_a_run_module_keeps_the_code_its_own_loader_makes(traced: Traced) -> None:
    """``python -m`` (runpy) asks the loader proxy for code: a loader with its own
    ``source_to_code`` (here with 3.15's signature) must make it, not autotrace's compile.
    The monitoring backend traces that code; the wrapt backend cannot rewrite it."""
    seen: list[Any] = []

    class Shouting(importlib.machinery.SourceFileLoader):
        def source_to_code(self, data: Any, path: Any, fullname: Any = None, *,  # type: ignore[override]
                           _optimize: int = -1) -> Any:
            seen.append(fullname)
            extra = (fullname,) if sys.version_info >= (3, 15) else ()
            return super().source_to_code(data.replace(b"quiet", b"LOUD"), path, *extra,
                                          _optimize=_optimize)

    name = traced.modules.module("loud", "def word():\n    return 'quiet'\n\nRESULT = word()\n")
    finder = _finder_for(name, traced.modules.root / f"{name}.py", Shouting)
    traced.install()
    sys.meta_path.insert(1, finder)  # after autotrace's finder, which asks it
    try:
        namespace = runpy.run_module(name, run_name="__main__")
    finally:
        sys.meta_path.remove(finder)
    assert namespace["RESULT"] == "LOUD"
    assert seen == ([name] if sys.version_info >= (3, 15) else [None])
    assert traced.names() == ([] if traced.backend == "wrapt" else ["word"])


WARNS = '''
PATTERN = "\\d"
REGISTRY = []

def f():
    return 1

REGISTRY.append(f)
'''


@needs_315
def test_a_warning_filter_for_the_module_name_behaves_as_untraced(traced: Traced) -> None:
    """3.15 compiles with ``module=fullname``: a filter for another module (``mod``) must
    not catch ``pkg.mod``'s syntax warning when autotrace compiles it. Had it raised, the
    rewrite would give up and the registry keep the untraced function."""
    name = traced.modules.package("wpkg", {"__init__.py": "", "mod.py": WARNS})
    traced.install()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.filterwarnings("error", category=SyntaxWarning, module="mod")
        mod = importlib.import_module(f"{name}.mod")
    assert mod.REGISTRY[0]() == 1
    assert traced.names() == ["f"]


# -- 3.15: lazy imports (PEP 810) ---------------------------------------------------------

LAZY_APP = '''
lazy import {p}heavy
lazy from {p}lib import work

def run(x):
    return work(x)

def use_heavy():
    return {p}heavy.h()
'''


@needs_315
def test_lazily_imported_modules_are_traced_once_loaded_and_never_forced(
        traced: Traced) -> None:
    modules = traced.modules
    modules.module("heavy", "def h():\n    return 'h'\n")
    modules.module("lib", "def work(x):\n    return x * 2\n")
    heavy, lib = modules.name("heavy"), modules.name("lib")
    app = importlib.import_module(modules.module("app", LAZY_APP))  # before install()
    traced.install()  # scanning app's namespace must not load what it names lazily
    assert heavy not in sys.modules and lib not in sys.modules
    assert app.run(2) == 4
    assert lib in sys.modules and heavy not in sys.modules
    assert traced.names() == ["work", "run"]
    assert app.use_heavy() == "h"
    assert traced.names() == ["work", "run", "h", "use_heavy"]


LAZY_ALL = '''
import sys
import {p}lib

def main():
    print("heavy loaded before use:", "{p}heavy" in sys.modules)
    return {p}lib.f(1)

print(main())
'''


@needs_315
def test_global_lazy_imports_trace_the_same_calls(tmp_path: Path, backend: str) -> None:
    """``PYTHON_LAZY_IMPORTS=all`` makes every top-level import lazy, autotrace's own
    included: the same tree, and the program's modules still load only when used."""
    p = "lz_"
    write(tmp_path, f"{p}heavy.py", "def h():\n    return 1\n")
    write(tmp_path, f"{p}lib.py", f"import {p}heavy\n\ndef f(x):\n    return {p}heavy.h() + x\n")
    write(tmp_path, f"{p}app.py", LAZY_ALL.replace("{p}", p))
    env = clean_env(PYTHON_LAZY_IMPORTS="all")
    out = run([*AUTOTRACE, "-p", f"{p}*", "--backend", backend, sys.executable,
               f"{p}app.py"], tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "heavy loaded before use: False\n2\n"
    assert [line.split("  ")[-2].strip() for line in tree_lines(out.stderr)] == [
        "main() -> 2", "f(x=1) -> 2", "h() -> 1"]


# -- 3.14: deferred annotations (PEP 649/749) ---------------------------------------------

ANNOTATED = '''
SEEN = []

def note(x):
    SEEN.append(x)
    return x

def greet(name: note("name"), count: Undefined = 1) -> AlsoUndefined:
    return name * count

class Shop:
    price: Missing

    def buy(self, item: Item) -> Receipt:
        return item
'''


@needs_314
def test_annotations_are_never_evaluated_and_may_name_the_undefined(traced: Traced) -> None:
    import annotationlib  # type: ignore[import-not-found, unused-ignore]

    mod = traced.load("annotated", ANNOTATED)
    assert mod.greet("ab", count=2) == "abab" and mod.Shop().buy("x") == "x"
    assert traced.names() == ["greet", "Shop.buy"]
    assert traced.args("greet") == {"name": "ab", "count": 2}
    assert mod.SEEN == []  # capturing the arguments evaluated no annotation
    hints = annotationlib.get_annotations(mod.greet, format=annotationlib.Format.FORWARDREF)
    assert set(hints) == {"name", "count", "return"} and set(mod.SEEN) == {"name"}
    with pytest.raises(NameError):  # as without autotrace: asked for, they are evaluated
        mod.Shop.buy.__annotations__  # noqa: B018


# -- 3.14: template strings (PEP 750) -----------------------------------------------------

TEMPLATES = '''
def query(sql, limit=10):
    return len(sql.strings)

def call():
    table, user_id, api_key = "users", 42, "k-123"
    query(t"SELECT * FROM {table} WHERE id = {user_id!r:>4} -- {{x}}")
    query(t"key={api_key}")
'''


@needs_314
def test_template_strings_are_shown_as_written_with_their_values(traced: Traced) -> None:
    mod = traced.load("templates", TEMPLATES)
    mod.call()
    first, second = [s for s in traced.spans() if s.name == "query"]
    prefix = "code.function.parameters.sql.value"
    assert dict(first.attributes or {})[prefix] == (
        "t'SELECT * FROM {table} WHERE id = {user_id!r:>4} -- {{x}}'"
        " with table='users', user_id=42")
    assert dict(second.attributes or {})[prefix] == "t'key={api_key}' with api_key='[REDACTED]'"


# -- free-threaded builds (3.13t+): not on this machine -----------------------------------

def test_without_the_gil_install_refuses_and_names_the_fix(
        monkeypatch: pytest.MonkeyPatch, provider: Any, backend: str) -> None:
    """A free-threaded build running without the GIL is simulated (``sys._is_gil_enabled``
    is the interpreter's own answer); with the GIL, as on this build, install() works."""
    import autotrace

    before = list(sys.meta_path)
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    with pytest.raises(autotrace.InstallError, match=r"PYTHON_GIL=1 \(or -X gil=1\)"):
        autotrace.install(["anything"], tracer_provider=provider, backend=backend)
    assert autotrace.active_installation() is None and sys.meta_path == before
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)
    assert autotrace.install(["anything"], tracer_provider=provider, backend=backend).active


# -- what is claimed is what CI runs ------------------------------------------------------

def test_classifiers_readme_and_ci_name_the_same_pythons() -> None:
    import re

    root = Path(__file__).resolve().parent.parent
    pyproject = (root / "pyproject.toml").read_text()
    claimed = re.findall(r'"Programming Language :: Python :: (3\.\d+)"', pyproject)
    ci = (root / ".ci" / "run").read_text()
    tested = [v for line in re.findall(r"^(?:mandatory|unstable)=\(([^)]*)\)", ci, re.M)
              for v in line.split()]
    assert claimed == tested and claimed[0] == "3.10"
    assert f'requires-python = ">={claimed[0]}"' in pyproject
    readme = (root / "README.md").read_text()
    assert f"Python {claimed[0]}\N{EN DASH}{claimed[-1]}, each tested" in readme
