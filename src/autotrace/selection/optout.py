"""Opting out of tracing, in its three forms, whatever the patterns say.

* ``@no_trace`` on a function, method, property or class marks the objects
  (``is_opted_out``): discovery skips them after a module has run;
* the same call remembers their code objects, by identity (``is_opted_out_code``):
  the monitoring backend selects code, not objects. Equal code objects (the same def
  at the same line of two modules) are two functions, only one of them opted out;
* ``@no_trace`` written above a ``def`` or ``class`` in the source
  (``opted_out_in_source``): the wrapt backend's rewrite decides before the
  decorator has run.
"""

from __future__ import annotations

import ast
import weakref
from collections.abc import Mapping
from typing import Any, TypeVar, Union

NO_TRACE_ATTR = "__autotrace_no_trace__"
#: id(code) -> a weak reference to that code object; the entry leaves with it.
_opted_out_codes: dict[int, weakref.ref[Any]] = {}

T = TypeVar("T")


def no_trace(obj: T) -> T:
    """Opt a function, method or class out of tracing; returns it unchanged.

    A decorator: it works above or below ``@staticmethod``/``@classmethod``/
    ``@property``, on nested functions too. Applied later, to a function already
    defined or called, it is not seen on every backend.
    """
    targets: list[Any] = [obj]
    if isinstance(obj, type):
        targets.extend(_class_functions(obj, set()))
    elif isinstance(obj, (staticmethod, classmethod)):
        targets.append(obj.__func__)
    elif isinstance(obj, property):
        targets.extend(f for f in (obj.fget, obj.fset, obj.fdel) if f is not None)
    for target in targets:
        try:
            setattr(target, NO_TRACE_ATTR, True)
        except (AttributeError, TypeError):
            pass
        code = getattr(target, "__code__", None)
        if code is not None:
            _remember_code(code)
    return obj


def _remember_code(code: Any) -> None:
    key = id(code)

    def forget(ref: weakref.ref[Any]) -> None:
        if _opted_out_codes.get(key) is ref:
            del _opted_out_codes[key]

    try:
        _opted_out_codes[key] = weakref.ref(code, forget)
    except TypeError:  # not a code object after all
        pass


def _class_functions(cls: type, seen: set[int]) -> list[Any]:
    """Functions a class body defines (nested classes included), for code-level opt-out."""
    if id(cls) in seen:
        return []
    seen.add(id(cls))
    found: list[Any] = []
    for value in vars(cls).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            found.extend(f for f in (value.fget, value.fset, value.fdel) if f is not None)
        elif isinstance(value, type) and value.__qualname__.startswith(cls.__qualname__ + "."):
            found.extend(_class_functions(value, seen))
        elif hasattr(value, "__code__"):
            found.append(value)
    return found


def is_opted_out(obj: Any) -> bool:
    """True when ``no_trace`` was applied to ``obj`` (classes: to this very class)."""
    if isinstance(obj, type):
        return bool(vars(obj).get(NO_TRACE_ATTR, False))
    try:
        return bool(getattr(obj, NO_TRACE_ATTR, False))
    except Exception:  # hostile __getattr__ on some callable object
        return False


def codes_opted_out() -> bool:
    """Whether ``no_trace`` has marked any code object yet (most programs: never), so
    that a module's selection can skip asking about each one."""
    return bool(_opted_out_codes)


def opted_out_code_ids() -> Mapping[int, Any]:
    """The ids of the code objects ``no_trace`` marked (a read-only view in spirit: the
    table itself, for a loop that only asks whether an id is there; the answer is then
    ``is_opted_out_code``'s)."""
    return _opted_out_codes


def is_opted_out_code(code: Any) -> bool:
    """True when ``no_trace`` was applied to a function running this very code object."""
    ref = _opted_out_codes.get(id(code))
    return ref is not None and ref() is code

#: A definition as the source rewrite sees it.
Definition = Union[ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef]


def decorated_with(node: Definition, name: str) -> bool:
    """Whether a decorator of node is called name (@name, @x.name,
    @name(...))."""
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Name) and target.id == name:
            return True
        if isinstance(target, ast.Attribute) and target.attr == name:
            return True
    return False


def opted_out_in_source(node: Definition) -> bool:
    """@no_trace above this def or class (a class: its nested ones too)."""
    return decorated_with(node, no_trace.__name__)
