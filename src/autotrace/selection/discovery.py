"""Finding the functions a module defines: its own functions and its classes' methods.

Both backends start here. The wrapt backend replaces each target with a
wrapper; the monitoring backend only collects their code objects. Only what
the module itself defines counts (``__module__`` and ``__qualname__`` must fit
the place it was found), so re-exports such as ``from os.path import join``
are never touched. Classes are walked through ``vars()``, never ``dir()``,
so inherited members belong to the class that defines them.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FunctionType, ModuleType
from typing import Any

from ..describe.function import code_of
from ..describe.values import TYPE_MODULE, TYPE_QUALNAME
from .names import RUN_NAMES, module_name
from .optout import is_opted_out
from .selector import Selector

FUNCTION = "function"
METHOD = "method"
CLASSMETHOD = "classmethod"
STATICMETHOD = "staticmethod"
PROPERTY = "property"
CACHED_PROPERTY = "cached_property"


@dataclass
class Target:
    """One traceable attribute: ``owner.__dict__[name]`` (a module or class)."""

    owner: Any
    name: str
    value: Any
    kind: str
    module: str  # the name used for selection and code.function.name
    qualname: str
    functions: list[Any] = field(default_factory=list)  # the callables to trace


def _is_generated(func: Any) -> bool:
    """Functions made by ``exec`` (dataclass ``__init__``, namedtuple helpers)."""
    code = code_of(func)
    return code is None or code.co_filename.startswith("<")


def _owned_function(obj: Any, real_module: str, qualname: str) -> bool:
    """A callable defined by this module at this place (decorators allowed)."""
    if not callable(obj) or isinstance(obj, type):
        return False
    try:
        if getattr(obj, "__module__", None) != real_module:
            return False
        if getattr(obj, "__qualname__", None) != qualname:
            return False
        if _is_generated(obj):
            return False
    except Exception:
        return False
    return isinstance(obj, FunctionType) or code_of(obj) is not None


def _class_defined_here(cls: type, real_module: str, qualname: str) -> bool:
    """A class this module defines at this place. A hostile metaclass (a
    ``__module__`` property that raises) makes it "no" rather than failing the
    whole module."""
    try:  # type's own slots: a metaclass property named __module__ is user code
        return bool(TYPE_MODULE.__get__(cls) == real_module
                    and TYPE_QUALNAME.__get__(cls) == qualname)
    except Exception:
        return False


def _class_selected(cls: type, real: str, name: str, qualname: str,
                    selector: Selector) -> bool:
    return _class_defined_here(cls, real, qualname) and selector.class_selected(
        name, qualname, cls)


def iter_targets(module: ModuleType, selector: Selector,
                 plain: list[FunctionType] | None = None,
                 items: list[tuple[str, Any]] | None = None) -> Iterator[Target]:
    """Every traced function and method ``module`` defines, under the patterns.

    With ``plain``, the traced functions defined at the top level by a plain ``def``
    are appended to it instead of being yielded as ``Target``s: most of a module, and
    a backend that needs only their code (monitoring) spares a ``Target`` for each.
    With ``items``, only those ``(name, value)`` entries of the module's namespace are
    looked at: the backend took care of the others (``backends/_monitoring.c``)."""
    real = module.__name__
    name = module_name(module)
    if not selector.may_contain(name):
        return
    if items is None:
        try:
            items = list(vars(module).items())
        except Exception:
            return
    visited: set[int] = set()
    found: list[tuple[str, FunctionType]] = []
    for attr, value in items:
        if type(value) is FunctionType:  # _owned_function inline: this runs once per def
            if (value.__module__ == real and value.__qualname__ == attr
                    and not value.__code__.co_filename.startswith("<")):
                found.append((attr, value))
        elif isinstance(value, type):
            if _class_selected(value, real, name, attr, selector):
                yield from _class_targets(value, real, name, selector, visited)
        elif _owned_function(value, real, attr) and selector.function_selected(
                name, attr, value):
            yield Target(module, attr, value, FUNCTION, name, attr, [value])
    selected = selector.module_functions_selected(name, found)
    if plain is not None:
        plain.extend(selected)
        return
    for func in selected:  # found where its __qualname__ names it
        attr = func.__qualname__
        yield Target(module, attr, func, FUNCTION, name, attr, [func])


def _class_targets(cls: type, real: str, name: str, selector: Selector,
                   visited: set[int]) -> Iterator[Target]:
    if id(cls) in visited:
        return
    visited.add(id(cls))
    prefix = cls.__qualname__
    try:
        items = list(vars(cls).items())
    except Exception:
        return
    for attr, value in items:
        qualname = f"{prefix}.{attr}"
        if isinstance(value, type):
            if _class_selected(value, real, name, qualname, selector):
                yield from _class_targets(value, real, name, selector, visited)
            continue
        if not selector.function_selected(name, qualname, value):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            func = value.__func__
            if _owned_function(func, real, qualname):
                kind = STATICMETHOD if isinstance(value, staticmethod) else CLASSMETHOD
                yield Target(cls, attr, value, kind, name, qualname, [func])
        elif isinstance(value, property):
            accessors = [f for f in (value.fget, value.fset, value.fdel)
                         if f is not None and _owned_function(f, real, f.__qualname__)
                         and f.__qualname__.startswith(prefix + ".") and not is_opted_out(f)]
            if accessors:
                yield Target(cls, attr, value, PROPERTY, name, qualname, accessors)
        elif isinstance(value, functools.cached_property):
            func = value.func
            if _owned_function(func, real, qualname) and not is_opted_out(func):
                yield Target(cls, attr, value, CACHED_PROPERTY, name, qualname, [func])
        elif _owned_function(value, real, qualname):
            yield Target(cls, attr, value, METHOD, name, qualname, [value])


def modules_to_scan(selector: Selector) -> list[ModuleType]:
    """Modules already imported whose names may hold traced functions.

    Lazy modules (``importlib.util.LazyLoader``) are skipped without touching
    them: any attribute access would run their body.
    """
    found = []
    for mod_name, module in list(sys.modules.items()):
        if not isinstance(module, ModuleType) or type(module).__name__ == "_LazyModule":
            continue
        if mod_name in RUN_NAMES:
            if selector.may_contain(module_name(module)):
                found.append(module)
        elif selector.may_contain(mod_name):
            found.append(module)
    return found
