"""The wrapt backend: replace each traced function with a ``TracedFunction`` proxy.

Modules are instrumented when the import hook reports them and, at
``start()``, when already imported. Every replacement is recorded as a
``Patch`` so that ``stop()`` can put the originals back; a proxy that escaped
earlier (``from m import f``) keeps working as a pass-through once the
installation is inactive.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from types import CodeType, ModuleType
from typing import TYPE_CHECKING, Any, cast

from ..._log import log_once
from ...describe.function import FunctionInfo
from ...loading.importhook import ImportHook
from ...record import Recorder
from ...selection import Selector
from ...selection.discovery import (
    CACHED_PROPERTY,
    CLASSMETHOD,
    METHOD,
    PROPERTY,
    STATICMETHOD,
    Target,
    iter_targets,
    modules_to_scan,
)
from . import main as wrapt_main

if TYPE_CHECKING:
    from .wrappers import TracedFunction

# ``.wrappers`` imports wrapt (~60 ms with its asyncio and importlib.metadata imports): it
# is imported when the first function is wrapped, not in every process at start-up.
_WRAPPERS = f"{__package__}.wrappers"


@dataclass
class Patch:
    """``owner.name`` was ``original`` and is now ``replacement``."""

    owner: Any
    name: str
    original: Any
    replacement: Any

    def in_place(self) -> bool:
        try:
            return vars(self.owner).get(self.name) is self.replacement
        except TypeError:
            return False

    def undo(self) -> None:
        if self.in_place():
            setattr(self.owner, self.name, self.original)


class WraptBackend:
    name = "wrapt"

    def __init__(self, selector: Selector, recorder: Recorder) -> None:
        self._selector = selector
        self._recorder = recorder
        self._patches: dict[str, list[Patch]] = {}
        self._lock = threading.RLock()
        self._hook = ImportHook(selector, self.instrument, self.compile_main)
        #: Functions wrapped so far (never decreases): "did the patterns match anything".
        self.matched = 0

    def start(self) -> None:
        for module in modules_to_scan(self._selector):
            self._hook.imported(module)
        self._hook.install()

    def stop(self) -> None:
        self._hook.uninstall()
        with self._lock:
            patches, self._patches = self._patches, {}
        for module_patches in patches.values():
            for patch in reversed(module_patches):
                try:
                    patch.undo()
                except Exception:
                    log_once("undo", "autotrace: could not restore %s", patch.name)

    def compile_main(self, source: str | bytes, filename: str, module: str) -> CodeType:
        """Compile a run module so each top-level definition is wrapped as it is made."""
        return wrapt_main.compile_main(self, source, filename, module)

    def may_trace(self, module: str) -> bool:
        return self._recorder.active and self._selector.may_contain(module)

    def instrument_name(self, namespace: dict[str, Any], name: str) -> None:
        """Wrap what a run module just bound to ``name`` (see ``wrapt_main``).

        Discovery looks at a view holding only ``name``; functions found there
        are patched into the real globals, so uninstall restores them there.
        """
        if not self._recorder.active or name not in namespace:
            return
        view = _Namespace({key: namespace[key] for key in ("__name__", "__spec__", "__file__")
                           if key in namespace})
        setattr(view, name, namespace[name])
        owner = _Namespace(namespace)
        targets = list(iter_targets(cast(ModuleType, view), self._selector))
        for target in targets:
            if target.owner is view:
                target.owner = owner
        self._apply(str(namespace.get("__name__")), targets)

    def instrument(self, module: ModuleType) -> None:
        """Wrap everything ``module`` defines that the patterns select (idempotent)."""
        made = self._apply(module.__name__, iter_targets(module, self._selector))
        self._repair_aliases(module, made)

    def _apply(self, key: str, targets: Iterable[Target]) -> list[Patch]:
        """Wrap ``targets`` and record the patches under ``key``; the new patches."""
        made: list[Patch] = []
        for target in targets:
            if _already_traced(target):
                continue
            try:
                made.extend(self._patch(target))
            except Exception:
                log_once(f"wrap:{target.module}.{target.qualname}",
                         "autotrace: could not wrap %s.%s; it runs untraced",
                         target.module, target.qualname)
        with self._lock:
            kept = [p for p in self._patches.get(key, []) if p.in_place()]
            self._patches[key] = kept + made
            self.matched += len(made)
        return made

    def _repair_aliases(self, module: ModuleType, made: list[Patch]) -> None:
        """Circular imports: ``from a import f`` run while ``a`` was half-initialised
        left other traced modules holding ``a``'s raw function; point them at the
        wrapper too (and record it, so uninstall puts the raw function back).
        Aliases in ``a`` itself (``padnone = pad_none``) get the same wrapper, so
        ``a.padnone is a.pad_none`` stays true."""
        wrapped = {id(p.original): p for p in made if p.owner is module}
        if not wrapped:
            return
        names = [module.__name__, *self._hook.finished_while_running(module.__name__)]
        with self._lock:
            others = [(name, self._patches.setdefault(name, [])) for name in names]
        for name, patches in others:
            other = module if name == module.__name__ else sys.modules.get(name)
            if other is None:
                continue
            for attr, value in list(vars(other).items()):
                patch = wrapped.get(id(value))
                if patch is None or value is not patch.original:
                    continue
                try:
                    setattr(other, attr, patch.replacement)
                except Exception:
                    continue
                with self._lock:
                    patches.append(Patch(other, attr, value, patch.replacement))

    def _traced(self, func: Any, target: Target, implicit_first: bool) -> TracedFunction:
        recorder = self._recorder
        qualname = getattr(func, "__qualname__", target.qualname)

        def describe() -> FunctionInfo:
            return recorder.describe_function(func, target.module, qualname, implicit_first)

        # staticmethod/classmethod objects are wrapped whole; wrapt binds them.
        wrapped = target.value if target.kind in (STATICMETHOD, CLASSMETHOD) else func
        from .wrappers import TracedFunction, make_wrapper

        return TracedFunction(wrapped, make_wrapper(func, self._recorder, describe))

    def _patch(self, target: Target) -> list[Patch]:
        owner, name, value = target.owner, target.name, target.value
        if target.kind == PROPERTY:
            fget, fset, fdel = (
                self._traced(f, target, False) if f in target.functions else f
                for f in (value.fget, value.fset, value.fdel)
            )
            replacement = _rebuilt_property(value, fget, fset, fdel)
            setattr(owner, name, replacement)
            return [Patch(owner, name, value, replacement)]
        if target.kind == CACHED_PROPERTY:
            func = target.functions[0]
            wrapper = self._traced(func, target, False)
            value.func = wrapper
            return [Patch(value, "func", func, wrapper)]
        implicit_first = target.kind in (METHOD, CLASSMETHOD)
        wrapper = self._traced(target.functions[0], target, implicit_first)
        setattr(owner, name, wrapper)
        return [Patch(owner, name, value, wrapper)]


class _Namespace:
    """An object whose attributes are a run module's globals dict."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.__dict__ = namespace


def _rebuilt_property(prop: property, fget: Any, fset: Any, fdel: Any) -> property:
    """``prop`` with other accessors. A subclass (toolz's ``InstanceProperty``) keeps
    its own state (``__dict__``), and its ``__init__``, user code that may want other
    arguments, is not run again."""
    cls = type(prop)
    if cls is property:
        return property(fget, fset, fdel, prop.__doc__)
    new: property = cls.__new__(cls)
    property.__init__(new, fget, fset, fdel, prop.__doc__)
    state = getattr(prop, "__dict__", None)
    if state:
        new.__dict__.update(state)
    return new


def _already_traced(target: Target) -> bool:
    wrappers = sys.modules.get(_WRAPPERS)
    if wrappers is None:  # nothing was wrapped yet
        return False
    proxy = wrappers.TracedFunction
    return isinstance(target.value, proxy) or any(isinstance(f, proxy) for f in target.functions)

