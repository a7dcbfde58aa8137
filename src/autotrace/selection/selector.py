"""``Selector``: the one question every part of autotrace asks, "is this traced?".

Each rule lives once, in this package: the name patterns (``patterns``), the
dunders left alone and the names of run modules (``names``), and the three
forms of opting out (``optout``). A backend, the import hook and the source
rewrite ask only the methods below, each with what it has at hand: a module's
name, a function object found after its module ran, a ``def`` in the source,
or a code object. A rule that selects by more than the name (a base class, a
decorator) belongs in these methods, and no backend changes for it.
"""

from __future__ import annotations

import ast
from types import CodeType, FunctionType
from typing import Any

from .names import untraced_dunder, untraced_qualname
from .optout import (
    NO_TRACE_ATTR,
    Definition,
    is_opted_out,
    is_opted_out_code,
    opted_out_in_source,
)
from .patterns import Patterns


class Selector(Patterns):
    """Which modules and functions are traced (see module docstring).

    ``may_contain(module)`` (a module may define traced functions) and
    ``matches(module, qualname)`` (the patterns select the name) come from
    ``Patterns``; the methods here add the other rules."""

    def class_selected(self, module: str, qualname: str, cls: type) -> bool:
        """Whether the members of class ``cls``, found at ``module.qualname``, may be
        traced (each is then asked about on its own)."""
        return not untraced_qualname(qualname) and not is_opted_out(cls)

    def function_selected(self, module: str, qualname: str, obj: Any) -> bool:
        """Whether ``obj`` (a function, a ``staticmethod``/``classmethod``, a property
        or ``cached_property``), which ``module`` defines at ``qualname``, is traced."""
        if untraced_qualname(qualname) or not self.matches(module, qualname):
            return False
        if is_opted_out(obj):
            return False
        inner = getattr(obj, "__func__", None) if isinstance(
            obj, (staticmethod, classmethod)) else None
        return inner is None or not is_opted_out(inner)

    def module_functions_selected(self, module: str, found: list[tuple[str, FunctionType]]
                                  ) -> list[FunctionType]:
        """``function_selected`` for many plain functions defined at the top level of
        ``module`` (``(name, function)`` pairs): the ones traced. One loop for a whole
        module, since this runs once per def as a traced module is imported."""
        if not self.may_contain(module):
            return []
        whole = self.whole(module)
        selected = []
        for name, func in found:
            if name[:2] == "__" and untraced_qualname(name):
                continue
            if not whole and not self.matches(module, name):
                continue
            if getattr(func, NO_TRACE_ATTR, False):  # is_opted_out, inline
                continue
            selected.append(func)
        return selected

    def def_selected(self, module: str, qualname: str, node: Definition,
                     in_class: bool) -> bool:
        """Whether a ``def`` in the source is traced, before it has run; for a
        ``class``, whether its body may hold traced defs."""
        if opted_out_in_source(node):
            return False
        if isinstance(node, ast.ClassDef):
            return True
        if untraced_dunder(node.name, in_class):
            return False
        return self.matches(module, qualname)

    def code_selected(self, module: str, code: CodeType) -> bool:
        """Whether a code object of ``module`` is traced (the monitoring backend sees
        code objects nested in the module's code, not the functions made of them)."""
        qualname = code.co_qualname
        if untraced_qualname(qualname) or is_opted_out_code(code):
            return False
        return self.matches(module, qualname)
