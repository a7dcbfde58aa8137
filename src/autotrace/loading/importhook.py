"""A ``sys.meta_path`` finder that reports each matching module right after it executes.

The finder asks the other finders for the real spec (skipping itself, passing
``path`` and ``target`` through) and replaces only ``spec.loader`` with a
proxy; the real loader is never patched, since loaders are shared between
modules. The proxy forwards everything (``get_code``, ``get_source``,
``get_resource_reader``, ...), puts the real loader back on the module before
its body runs (so ``importlib.resources`` and ``inspect.getsource`` see the
real one), and calls the hook after the body has run. Imports hold the
per-module import lock across ``exec_module``, so threads importing the same
module at once see it executed and hooked exactly once.

The installed finder also serves the main script (``mainscript``), the one
module that no finder sees: ``installed()`` is how it is found.
"""

from __future__ import annotations

import sys
import threading
import zipimport
from importlib.machinery import ModuleSpec
from types import CodeType, ModuleType
from typing import Any, Callable, Sequence, Union

from .._log import log_once
from ..selection import Selector
from ..selection.names import script_module_name
from .source import plain_source_loader

ModuleHook = Callable[[ModuleType], None]
#: ``(source, filename, module name) -> code`` for modules run by runpy (``-m``).
CompileHook = Callable[[Union[str, bytes], str, str], CodeType]
#: ``(loader, module) -> code`` to run instead of the loader's, or None for the loader's.
ModuleCompileHook = Callable[[Any, ModuleType], Union[CodeType, None]]
#: ``(code, module name)``: the code a module run by runpy got from its own loader.
AdoptHook = Callable[[CodeType, str], None]


class _Guard(threading.local):
    finding = False


_installed: ImportHook | None = None


def installed() -> ImportHook | None:
    """The finder of the active installation, if any (the main script asks it)."""
    return _installed


class ProxyLoader:
    """A proxy around a spec's real loader (never patch a shared loader instance): every
    other attribute passes through, and the module gets its real loader back before
    its body runs (``importlib.resources``, ``inspect.getsource``)."""

    def __init__(self, loader: Any, finder: Any) -> None:
        self._autotrace_loader = loader
        self._autotrace_finder = finder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._autotrace_loader, name)

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        create = getattr(self._autotrace_loader, "create_module", None)
        return create(spec) if create is not None else None

    def _hand_back(self, module: ModuleType) -> Any:
        """Put the real loader back on ``module``; returns it."""
        loader = self._autotrace_loader
        try:
            module.__loader__ = loader
            if module.__spec__ is not None and module.__spec__.loader is self:  # type: ignore[comparison-overlap]
                module.__spec__.loader = loader
        except Exception:
            pass
        return loader


class LoaderProxy(ProxyLoader):
    """Stands in for a module's real loader to run the hook after ``exec_module``."""

    _autotrace_finder: ImportHook

    def exec_module(self, module: ModuleType) -> None:
        loader = self._hand_back(module)
        finder = self._autotrace_finder
        finder.started(module.__name__)
        code = finder.compile_imported(loader, module)
        if code is None:
            loader.exec_module(module)
        else:
            exec(code, module.__dict__)
        # A module may replace itself in sys.modules while it runs.
        finder.imported(sys.modules.get(module.__name__, module))

    def get_code(self, fullname: str) -> CodeType | None:
        """runpy (``python -m``) runs this code in ``__main__`` without ``exec_module``.

        Only a loader that compiles its source unchanged gets autotrace's compile in
        its place; any other (a rewriting loader, or one written for 3.15's
        ``source_to_code(data, path, fullname)``) makes its own code, and the backend
        is told about it."""
        loader = self._autotrace_loader
        finder = self._autotrace_finder
        if plain_source_loader(loader) or type(loader) is zipimport.zipimporter:
            compiled = finder.compile_run_module(loader, fullname)
            if compiled is not None:
                return compiled
            return loader.get_code(fullname)  # type: ignore[no-any-return]
        code = loader.get_code(fullname)
        finder.adopt_run_module(code, fullname)
        return code  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<autotrace LoaderProxy for {self._autotrace_loader!r}>"


class ImportHook:
    """The meta-path finder; install() puts it first, uninstall() removes it."""

    def __init__(self, selector: Selector, hook: ModuleHook,
                 compile_code: CompileHook | None = None,
                 compile_module: ModuleCompileHook | None = None,
                 adopt_code: AdoptHook | None = None) -> None:
        self._selector = selector
        self._hook = hook
        self._compile = compile_code
        self._compile_module = compile_module
        self._adopt = adopt_code
        self._guard = _Guard()
        # Order in which hooked modules finished, and where each one started in it:
        # what finished in between was imported while that module was running.
        self._finished: list[str] = []
        self._started_at: dict[str, int] = {}

    def install(self) -> None:
        global _installed
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)
        _installed = self

    def uninstall(self) -> None:
        global _installed
        if _installed is self:
            _installed = None
        while self in sys.meta_path:
            sys.meta_path.remove(self)

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if not self._selector.may_contain(fullname):
            return None
        guard = self._guard
        if guard.finding:
            return None
        guard.finding = True
        try:
            spec = self._real_spec(fullname, path, target)
        except Exception:
            log_once("find_spec", "autotrace: could not look up module %s; it is not traced",
                     fullname)
            return None
        finally:
            guard.finding = False
        if spec is None:
            return None
        loader = spec.loader
        if loader is None or isinstance(loader, LoaderProxy) or not hasattr(loader,
                                                                            "exec_module"):
            return spec  # namespace packages and legacy loaders: nothing to hook
        spec.loader = LoaderProxy(loader, self)  # type: ignore[assignment]
        return spec

    def _real_spec(self, fullname: str, path: Sequence[str] | None,
                   target: ModuleType | None) -> ModuleSpec | None:
        for finder in list(sys.meta_path):
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            try:
                spec = find(fullname, path, target)
            except TypeError:
                spec = find(fullname, path)
            if spec is not None:
                return spec  # type: ignore[no-any-return]
        return None

    def may_trace_script(self, filename: str) -> bool:
        """Whether the patterns can select functions of the script ``filename``."""
        return self._selector.may_contain(script_module_name(filename))

    def compile_script(self, source: Union[str, bytes], filename: str) -> CodeType | None:
        """The main script compiled through the backend to run as ``__main__``; None
        (the interpreter runs it) when the backend compiles nothing itself."""
        if self._compile is None:
            return None
        return self._compile(source, filename, "__main__")

    def compile_run_module(self, loader: Any, fullname: str) -> CodeType | None:
        """Compile ``fullname`` from source through the backend; None to fall back."""
        if self._compile is None:
            return None
        try:
            source = loader.get_source(fullname)
            filename = loader.get_filename(fullname)
        except Exception:
            return None
        if source is None:
            return None
        try:
            return self._compile(source, filename, fullname)
        except SyntaxError:
            return None  # let the real loader report it the usual way
        except Exception:
            log_once(f"compile:{fullname}", "autotrace: could not prepare %s to run traced; "
                     "it runs untraced", fullname)
            return None

    def adopt_run_module(self, code: Any, fullname: str) -> None:
        """Let the backend trace a run module's code that its own loader made."""
        if self._adopt is None or not isinstance(code, CodeType):
            return
        try:
            self._adopt(code, fullname)
        except Exception:
            log_once(f"adopt:{fullname}", "autotrace: could not prepare %s to run traced; "
                     "it runs untraced", fullname)

    def compile_imported(self, loader: Any, module: ModuleType) -> CodeType | None:
        """The code to run for an imported module instead of the loader's, or None."""
        if self._compile_module is None:
            return None
        try:
            return self._compile_module(loader, module)
        except Exception:
            log_once(f"compile:{module.__name__}", "autotrace: could not rewrite %s; its "
                     "functions are wrapped after it runs", module.__name__)
            return None

    def started(self, name: str) -> None:
        self._started_at[name] = len(self._finished)

    def finished_while_running(self, name: str) -> list[str]:
        """Hooked modules whose import finished while ``name`` was executing
        (the only ones that can hold its half-initialised attributes)."""
        start = self._started_at.get(name)
        if start is None:
            return []
        return [other for other in self._finished[start:] if other != name]

    def imported(self, module: ModuleType) -> None:
        if not isinstance(module, ModuleType):
            return  # it replaced itself in sys.modules with another object
        self._finished.append(module.__name__)
        try:
            self._hook(module)
        except Exception:
            log_once(f"hook:{getattr(module, '__name__', '?')}",
                     "autotrace: could not instrument module %s; it runs untraced",
                     getattr(module, "__name__", "?"))
