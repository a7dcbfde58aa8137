"""The wrapt backend: replace each traced function with a ``TracedFunction`` proxy.

A matching module imported from source is compiled with each traced ``def``
wrapped as it is defined (``main.py``), so decorators and registries receive
the proxy; the same rewrite serves modules that are run (``python app.py``,
``-m``, ``runpy.run_path``, multiprocessing's ``__mp_main__``). Modules
without source, and those imported before ``start()``, are wrapped in place
after their body has run. Every replacement is recorded so that ``stop()``
can put the originals back; a proxy that escaped (``from m import f``, a
registry) keeps working as a pass-through once the installation is inactive.
"""

from __future__ import annotations

import functools
import importlib
import io
import runpy
import sys
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.util import MAGIC_NUMBER
from types import CodeType, FunctionType, ModuleType
from typing import TYPE_CHECKING, Any

from ..._log import log_once, logger
from ...describe.function import FunctionInfo
from ...loading.importhook import ImportHook
from ...loading.source import compile_source, parse_source
from ...loading.source import plain_source_loader as _plain_source_loader
from ...record.contract import Core
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
from ...selection.names import namespace_module_name, run_module_name, script_module_name
from . import cache
from . import main as wrapt_main
from .stack import inspects_stack

if TYPE_CHECKING:
    from .wrappers import ProxyMaker, TracedFunction

# ``.wrappers`` imports wrapt (~60 ms with its asyncio and importlib.metadata imports): it
# is imported when the first function is wrapped, not in every process at start-up.
_WRAPPERS = f"{__package__}.wrappers"


def _wrappers() -> Any:
    return sys.modules.get(_WRAPPERS) or importlib.import_module(_WRAPPERS)


def _is_proxy(obj: Any) -> bool:
    """A ``TracedFunction``, without importing wrapt to ask (none exists before that)."""
    wrappers = sys.modules.get(_WRAPPERS)
    return wrappers is not None and isinstance(obj, wrappers.TracedFunction)


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

    def __init__(self, selector: Selector, recorder: Core) -> None:
        self._selector = selector
        self._cache_tag = cache.tag(selector.patterns, selector.exclude)
        self._recorder = recorder
        self._patches: dict[str, list[Patch]] = {}
        self._lock = threading.RLock()
        self._hook = ImportHook(selector, self.instrument, self.compile_main,
                                self.compile_imported)
        #: Functions wrapped so far in Python (never decreases); ``matched`` adds the
        #: compiled decorators' count.
        self._matched = 0
        #: The compiled core's decorators of rewritten defs, once the first def is wrapped.
        self._definers: tuple[Any, ...] = ()
        #: Proxies made as module and class bodies ran (not closures), for uninstall.
        self._defined: list[TracedFunction] = []
        #: Descriptions shared by the proxies of one closure (one per outer call).
        self._closure_infos: weakref.WeakKeyDictionary[CodeType, FunctionInfo] = \
            weakref.WeakKeyDictionary()
        self._runpy_original: Any = None
        self._last_module: tuple[Any, str] = (None, "")
        #: ``wrappers.plain_proxy_maker`` for this recorder, once the first def is wrapped.
        self._make_plain: ProxyMaker | None = None
        #: Imported modules whose code came from the rewrite, until their body has run.
        self._rewritten: set[str] = set()

    @property
    def matched(self) -> int:
        """Functions wrapped so far (never decreases): "did the patterns match anything"."""
        return self._matched + sum(int(definer.made) for definer in self._definers)

    def start(self) -> None:
        wrapt_main.activate(self)
        self._patch_runpy()
        for module in modules_to_scan(self._selector):
            self._hook.imported(module)
        self._hook.install()

    def stop(self) -> None:
        self._hook.uninstall()
        wrapt_main.deactivate(self)
        self._unpatch_runpy()
        with self._lock:
            patches, self._patches = self._patches, {}
            defined, self._defined = self._defined, []
        self._restore_defined(defined, patches)
        for module_patches in patches.values():
            for patch in reversed(module_patches):
                try:
                    patch.undo()
                except Exception:
                    log_once("undo", "autotrace: could not restore %s", patch.name)

    def _restore_defined(self, proxies: list[TracedFunction],
                         patches: dict[str, list[Patch]]) -> None:
        """Put raw functions back wherever a module or class holds a proxy made as it
        was defined: module globals, the traced modules that imported it (``from a
        import f``), and class dicts (found from the globals by qualname now, so that
        importing pays nothing for it)."""
        if not proxies:
            return
        raws = [(_wrappers().raw_target(proxy), proxy) for proxy in proxies]
        defined = [(raw.__globals__, raw.__qualname__, raw, proxy) for raw, proxy in raws]
        raw_of = {id(proxy): (proxy, raw) for _, _, raw, proxy in defined}
        namespaces = {id(ns): ns for ns, qualname, _, _ in defined if "." not in qualname}
        for name in patches:
            module = sys.modules.get(name)
            if isinstance(module, ModuleType):
                namespaces.setdefault(id(module.__dict__), module.__dict__)
        for namespace in namespaces.values():
            try:
                for attr, value in list(namespace.items()):
                    found = raw_of.get(id(value))
                    if found is not None and found[0] is value:
                        namespace[attr] = found[1]
            except Exception:
                log_once("undo", "autotrace: could not restore the functions of %s",
                         namespace.get("__name__"))
        classes: dict[int, Any] = {}
        for namespace, qualname, _, _ in defined:
            if "." in qualname:
                owner = _class_of(namespace, qualname)
                if owner is not None:
                    classes[id(owner)] = owner
        for cls in classes.values():
            try:
                for attr, value in list(vars(cls).items()):
                    original = _unwrapped(value, raw_of)
                    if original is not None:
                        setattr(cls, attr, original)
            except Exception:
                log_once("undo", "autotrace: could not restore the methods of %s", cls)

    def compile_main(self, source: str | bytes, filename: str, module: str) -> CodeType:
        """Compile a run module (``__main__``, ``-m``, ``run_path``) so each selected
        definition is wrapped as it is made."""
        tree = parse_source(source, filename, module)
        name = run_module_name(module, filename)
        if self.may_trace(name):
            wrapt_main.rewrite(tree, name, self._selector.def_selected, source)
        return compile_source(tree, filename, module)

    def may_trace(self, module: str) -> bool:
        return self._recorder.active and self._selector.may_contain(module)

    def compile_imported(self, loader: Any, module: ModuleType) -> CodeType | None:
        """An imported module's code with its traced defs wrapped as they are defined;
        None (the loader runs it, wrapped after its body) without source or nothing
        to trace."""
        if not _plain_source_loader(loader) or not self._recorder.active:
            return None
        name = module.__name__
        if not self._selector.may_contain(name):
            return None
        filename = loader.get_filename(name)
        stats = loader.path_stats(filename)
        mtime, size = stats["mtime"], stats.get("size", 0)
        stored = cache.cache_path(filename, self._cache_tag)
        if stored is not None:
            cached = cache.read(stored, mtime, size)
            if cached is not None:
                return self._rewritten_code(name, None if isinstance(cached, str) else cached)
        source = loader.get_data(filename)
        try:
            tree = parse_source(source, filename, name)
        except (SyntaxError, ValueError):
            return None  # the loader reports it, in its own words
        code: CodeType | None = None
        if wrapt_main.rewrite(tree, name, self._selector.def_selected, source):
            code = compile_source(tree, filename, name)
        if stored is not None:
            cache.write(stored, cache.NOTHING if code is None else code, mtime, len(source))
        return self._rewritten_code(name, code)

    def _rewritten_code(self, name: str, code: CodeType | None) -> CodeType | None:
        if code is not None:
            with self._lock:
                self._rewritten.add(name)
        return code

    def wrap_defined(self, func: Any, implicit_first: bool) -> Any:
        """The innermost decorator of a rewritten def: its proxy, or ``func``. Runs once
        per def as a module body runs, in one frame: kept lean (import cost)."""
        if type(func) is not FunctionType or not self._recorder.active:
            return func
        try:
            qualname = func.__qualname__
            code = func.__code__
            if inspects_stack(code):
                logger.debug("autotrace: %s.%s inspects the stack; it runs unwrapped under "
                             "the wrapt backend", func.__module__, qualname)
                return func
            namespace = func.__globals__
            last = self._last_module
            if last[0] is namespace:
                module = last[1]
            else:
                module = namespace_module_name(namespace)
                self._last_module = (namespace, module)
            if "<locals>" in qualname:  # a proxy per call of the outer function, none kept
                self._matched += 1
                return self._traced_function(func, func, module, qualname, implicit_first)
            make = self._make_plain
            if make is None:
                make = self._first_def()
            wrapper = make(func, module, qualname, implicit_first, code.co_flags)
            self._defined.append(wrapper)  # atomic under the GIL
            self._matched += 1
            return wrapper
        except Exception:
            log_once(f"wrap:{getattr(func, '__qualname__', '?')}",
                     "autotrace: could not wrap %s; it runs untraced",
                     getattr(func, "__qualname__", "?"))
            return func

    def _first_def(self) -> ProxyMaker:
        """Made at the first def wrapped (so that installing imports no wrapt): the
        proxy maker and, with the compiled core, the decorators rewritten code then
        calls instead of this method for most defs (``main.use_compiled``)."""
        wrappers = _wrappers()
        make: ProxyMaker = wrappers.plain_proxy_maker(self._recorder)
        definers = wrappers.plain_definers(self.wrap_defined, self._recorder, self._defined)
        with self._lock:  # two threads' first defs: one pair of decorators, counted
            if self._make_plain is None:
                self._make_plain = make
                if definers is not None:
                    self._definers = definers
                    wrapt_main.use_compiled(self, *definers)
            return self._make_plain

    def _patch_runpy(self) -> None:
        """``runpy.run_path`` (``__mp_main__`` in spawned workers, ``run_path`` callers)
        compiles the file itself: give it the rewritten code."""
        original = getattr(runpy, "_get_code_from_file", None)
        if original is None or self._runpy_original is not None:
            return
        backend = self

        def _get_code_from_file(*args: Any) -> Any:
            result = original(*args)
            try:
                code = result[0] if isinstance(result, tuple) else result
                rewritten = backend._run_path_code(code)
                if rewritten is not None:
                    return (rewritten, *result[1:]) if isinstance(result, tuple) else rewritten
            except Exception:
                log_once("run_path", "autotrace: could not prepare a run_path module; it "
                         "runs untraced")
            return result

        _get_code_from_file.__wrapped__ = original  # type: ignore[attr-defined]
        self._runpy_original = original
        runpy._get_code_from_file = _get_code_from_file  # type: ignore[attr-defined]

    def _unpatch_runpy(self) -> None:
        original, self._runpy_original = self._runpy_original, None
        if original is not None and getattr(runpy._get_code_from_file,  # type: ignore[attr-defined]
                                            "__wrapped__", None) is original:
            runpy._get_code_from_file = original  # type: ignore[attr-defined]

    def _run_path_code(self, code: Any) -> CodeType | None:
        if not isinstance(code, CodeType) or not self._recorder.active:
            return None
        filename = code.co_filename
        stem = script_module_name(filename)
        if not self._selector.may_contain(stem):
            return None
        with io.open_code(filename) as stream:
            source = stream.read()
        if source[:len(MAGIC_NUMBER)] == MAGIC_NUMBER:
            return None  # run from a .pyc: wrapped after it runs, if at all
        return self.compile_main(source, filename, stem)

    def instrument(self, module: ModuleType) -> None:
        """Wrap everything ``module`` defines that the patterns select (idempotent).

        A module compiled by the rewrite is skipped: its defs were wrapped as they
        ran (discovery would cost more than the import, ~5 us per function)."""
        with self._lock:
            rewritten = module.__name__ in self._rewritten
            self._rewritten.discard(module.__name__)
            if rewritten:
                self._patches.setdefault(module.__name__, [])
                return
        made = self._apply(module.__name__, iter_targets(module, self._selector))
        self._repair_aliases(module, made)

    def _apply(self, key: str, targets: Iterable[Target]) -> list[Patch]:
        """Wrap ``targets`` and record the patches under ``key``; the new patches."""
        made: list[Patch] = []
        for target in targets:
            if _already_traced(target):
                undo = _undo_defined(target)
                if undo is not None:
                    made.append(undo)
                continue
            if any(inspects_stack(getattr(f, "__code__", None)) for f in target.functions):
                logger.debug("autotrace: %s.%s inspects the stack; it runs unwrapped under "
                             "the wrapt backend", target.module, target.qualname)
                continue
            try:
                made.extend(self._patch(target))
                self._matched += 1
            except Exception:
                log_once(f"wrap:{target.module}.{target.qualname}",
                         "autotrace: could not wrap %s.%s; it runs untraced",
                         target.module, target.qualname)
        with self._lock:
            kept = [p for p in self._patches.get(key, []) if p.in_place()]
            self._patches[key] = kept + made
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
        qualname = getattr(func, "__qualname__", target.qualname)
        # staticmethod/classmethod objects are wrapped whole; wrapt binds them.
        wrapped = target.value if target.kind in (STATICMETHOD, CLASSMETHOD) else func
        return self._traced_function(func, wrapped, target.module, qualname, implicit_first)

    def _traced_function(self, func: Any, wrapped: Any, module: str, qualname: str,
                         implicit_first: bool) -> TracedFunction:
        recorder = self._recorder
        infos = self._closure_infos
        code = getattr(func, "__code__", None)
        # A closure gets a new proxy each time its outer function runs: describe it
        # once per code object (defaults are part of the description: not shared).
        shared = ("<locals>" in qualname and isinstance(code, CodeType)
                  and not getattr(func, "__defaults__", None)
                  and not getattr(func, "__kwdefaults__", None))

        def describe() -> FunctionInfo:
            if shared:
                found = infos.get(code)  # type: ignore[arg-type]
                if found is not None:
                    return found
            info = recorder.describe_function(func, module, qualname, implicit_first)
            if shared:
                infos[code] = info  # type: ignore[index]
            return info

        wrappers = _wrappers()
        plain = type(wrapped) is FunctionType  # not a static or class method object
        kind = wrappers.TracedPlainFunction if plain else wrappers.TracedFunction
        proxy: TracedFunction = kind(wrapped, wrappers.make_wrapper(func, self._recorder,
                                                                    describe))
        return proxy

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


def _class_of(namespace: dict[str, Any], qualname: str) -> Any:
    """The class that ``qualname`` (``Outer.Inner.method``) names in ``namespace``."""
    parts = qualname.split(".")[:-1]
    owner = namespace.get(parts[0])
    for part in parts[1:]:
        if not isinstance(owner, type):
            return None
        owner = vars(owner).get(part)
    return owner if isinstance(owner, type) else None


def _unwrapped(value: Any, raw_of: dict[int, tuple[Any, Any]]) -> Any:
    """What a class attribute was before its function got a proxy; None: unchanged."""
    def raw(func: Any) -> Any:
        found = raw_of.get(id(func))
        return found[1] if found is not None and found[0] is func else None

    plain = raw(value)
    if plain is not None:
        return plain
    if type(value) in (staticmethod, classmethod):
        func = raw(value.__func__)
        return None if func is None else type(value)(func)
    if isinstance(value, property):
        accessors = [value.fget, value.fset, value.fdel]
        originals = [raw(f) for f in accessors]
        if not any(o is not None for o in originals):
            return None
        return _rebuilt_property(value, *(o if o is not None else f
                                          for o, f in zip(originals, accessors, strict=True)))
    if isinstance(value, functools.cached_property):
        func = raw(value.func)
        if func is not None:
            value.func = func
    return None


def _undo_defined(target: Target) -> Patch | None:
    """The patch that puts the raw method back in place of one wrapped as it was
    defined (uninstall: a class dict then holds what the class body made untraced)."""
    owner, name, value, kind = target.owner, target.name, target.value, target.kind
    if isinstance(owner, ModuleType):
        return None  # module globals: see WraptBackend._restore_defined
    try:
        if kind == METHOD and _is_proxy(value):
            return Patch(owner, name, _wrappers().raw_target(value), value)
        if kind in (STATICMETHOD, CLASSMETHOD) and type(value) in (staticmethod, classmethod):
            func = value.__func__
            if _is_proxy(func):
                return Patch(owner, name, type(value)(_wrappers().raw_target(func)), value)
        if kind == PROPERTY:
            raw = [_wrappers().raw_target(f) if _is_proxy(f) else f
                   for f in (value.fget, value.fset, value.fdel)]
            return Patch(owner, name, _rebuilt_property(value, *raw), value)
        if kind == CACHED_PROPERTY and _is_proxy(value.func):
            return Patch(value, "func", _wrappers().raw_target(value.func), value.func)
    except Exception:
        return None
    return None


def _already_traced(target: Target) -> bool:
    """A proxy is in place, or inside a decorator's result (``lru_cache`` of a
    function wrapped as it was defined): never a second span around it."""
    return _holds_proxy(target.value) or any(_holds_proxy(f) for f in target.functions)


def _holds_proxy(obj: Any) -> bool:
    for _ in range(8):
        if _is_proxy(obj):
            return True
        try:
            obj = vars(obj).get("__wrapped__") if hasattr(obj, "__dict__") else None
        except Exception:
            return False
        if obj is None:
            return False
    return False

