"""Wrapping at definition time: a matching module is compiled with each traced ``def``
wrapped *as it is defined*.

Wrapping a module's attributes after its body has run misses everything the
body itself kept: ``@app.route`` and ``@click.command`` registries, pytest
fixtures, ``FILTERS = {"x": f}``, default arguments, ``Thread(target=f)``,
``main()`` called by a run module. So the source is rewritten before it is
compiled: every ``def`` / ``async def`` whose ``module.qualname`` the patterns
select (module level, class bodies, and closures as ``outer.<locals>.inner``)
gets one more decorator, the innermost, so every decorator the user wrote
receives the traced function::

    @app.route("/")
    @__import__("autotrace.backends.wrapt.main", fromlist=("_",)).function
    def index(): ...

(``.method`` in a class body, where the first argument is ``self`` or ``cls``.)

The added decorator binds no name in the user's module, carries the location
of the ``def`` (so line numbers, ``co_firstlineno`` and ``inspect.getsource``
are unchanged), and calls the active wrapt backend; with none active it
returns the function untouched. On the compiled core, ``function`` and ``method``
are rebound to C decorators once the backend wraps its first def (``use_compiled``):
a plain def's proxy is then made with no Python frame, which is most of the import
cost of a traced module. A source that could rebind ``__import__``
anywhere is compiled unchanged.
"""

from __future__ import annotations

import ast
import threading
from typing import Any, Callable, Protocol, Union

from ...selection.optout import Definition, decorated_with

#: ``(module, qualname, def or class statement, in a class body) -> traced?``:
#: ``Selector.def_selected``.
DefSelected = Callable[[str, str, Definition, bool], bool]
#: The decorator rewritten code adds: a function -> its traced form (or itself).
Decorator = Callable[[Any], Any]

_HELPER = "__import__"
_STATIC = "staticmethod"

#: The rewritten code's format, part of the cache tag (``cache.tag``): raise it when
#: what ``rewrite`` emits changes, so that no cache holds code of another format
#: (an editable install keeps its version number across such changes).
FORMAT = 3


class Decorates(Protocol):
    """The active backend, as rewritten code reaches it."""

    def wrap_defined(self, func: Any, implicit_first: bool) -> Any: ...


_lock = threading.Lock()
_active: Decorates | None = None


def activate(backend: Decorates | None) -> None:
    """Route the decorators of rewritten code to ``backend`` (None: pass-through)."""
    global _active, function, method
    with _lock:
        _active = backend
        function, method = _function, _method


def use_compiled(backend: Decorates, compiled_function: Decorator,
                 compiled_method: Decorator) -> None:
    """While ``backend`` is active, rewritten code calls these instead (the compiled
    core's ``Definer``s: ``wrap_defined``'s common case with no Python frame per def)."""
    global function, method
    with _lock:
        if _active is backend:
            function, method = compiled_function, compiled_method


def deactivate(backend: Decorates) -> None:
    global _active, function, method
    with _lock:
        if _active is backend:
            _active = None
            function, method = _function, _method


def _function(func: Any) -> Any:
    """Called by rewritten code on a def whose first argument is not implicit: the
    traced function, or ``func`` with no backend active."""
    backend = _active
    return func if backend is None else backend.wrap_defined(func, False)


def _method(func: Any) -> Any:
    """``function`` for a def in a class body (its first argument: ``self``, ``cls``)."""
    backend = _active
    return func if backend is None else backend.wrap_defined(func, True)


#: What rewritten code calls, read at each def: ``_function`` / ``_method``, or the
#: compiled decorators an active backend installed (``use_compiled``).
function: Decorator = _function
method: Decorator = _method


def traced(implicit_first: bool) -> Callable[[Any], Any]:
    """The decorator of code rewritten in ``FORMAT`` 2 (``.traced(False)``): such code is
    never read from the cache now, but a module compiled by an older autotrace and
    kept elsewhere must not fail to import after an upgrade."""
    return method if implicit_first else function


def rewrite(tree: ast.Module, module: str, selected: DefSelected,
            source: Union[str, bytes, None] = None) -> int:
    """Add the tracing decorator to every selected def of ``tree``; how many.

    ``source``, when given, spares the walk for ``__import__`` when it never occurs."""
    mentioned = True
    if isinstance(source, bytes):
        mentioned = b"__import__" in source
    elif isinstance(source, str):
        mentioned = "__import__" in source
    if mentioned and _rebinds_helper(tree):
        return 0
    return _Rewriter(module, selected).block(tree.body, "", False)


class _Rewriter:
    def __init__(self, module: str, selected: DefSelected) -> None:
        self.module = module
        self.selected = selected

    def block(self, body: list[ast.stmt], prefix: str, in_class: bool) -> int:
        count = 0
        for stmt in body:
            count += self.statement(stmt, prefix, in_class)
        return count

    def statement(self, stmt: ast.stmt, prefix: str, in_class: bool) -> int:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            qualname = prefix + stmt.name
            count = 0
            if self.selected(self.module, qualname, stmt, in_class):
                implicit = in_class and not decorated_with(stmt, _STATIC)
                stmt.decorator_list.append(_decorator(stmt, implicit))
                count = 1
            return count + self.block(stmt.body, qualname + ".<locals>.", False)
        if isinstance(stmt, ast.ClassDef):
            qualname = prefix + stmt.name
            if not self.selected(self.module, qualname, stmt, in_class):
                return 0  # opted out whole, nested classes included
            return self.block(stmt.body, qualname + ".", True)
        count = 0
        for field in ("body", "orelse", "finalbody"):
            inner = getattr(stmt, field, None)
            if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                count += self.block(inner, prefix, in_class)
        for handler in getattr(stmt, "handlers", ()) or ():
            count += self.block(handler.body, prefix, in_class)
        for case in getattr(stmt, "cases", ()) or ():
            count += self.block(case.body, prefix, in_class)
        return count


def _decorator(stmt: ast.FunctionDef | ast.AsyncFunctionDef, implicit_first: bool
               ) -> ast.expr:
    # The def line: no user statement moves, co_firstlineno stays the first user
    # decorator's line (or the def's), and a failure here points at the def.
    at: dict[str, Any] = {"lineno": stmt.lineno, "end_lineno": stmt.lineno,
                          "col_offset": stmt.col_offset, "end_col_offset": stmt.col_offset}
    fromlist = ast.Tuple(elts=[ast.Constant(value="_", **at)], ctx=ast.Load(), **at)
    helper = ast.Call(func=ast.Name(id=_HELPER, ctx=ast.Load(), **at),
                      args=[ast.Constant(value=__name__, **at)],
                      keywords=[ast.keyword(arg="fromlist", value=fromlist, **at)], **at)
    return ast.Attribute(value=helper, attr="method" if implicit_first else "function",
                         ctx=ast.Load(), **at)


def _rebinds_helper(tree: ast.Module) -> bool:
    """Whether any scope could bind ``__import__`` (the rewrite would call that instead)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if node.id == _HELPER and not isinstance(node.ctx, ast.Load):
                return True
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == _HELPER:
                return True
        elif isinstance(node, ast.arg):
            if node.arg == _HELPER:
                return True
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if (alias.asname or alias.name.split(".", 1)[0]) == _HELPER:
                    return True
        elif isinstance(node, (ast.Global, ast.Nonlocal)) and _HELPER in node.names:
            return True
        elif isinstance(node, ast.ExceptHandler) and node.name == _HELPER:
            return True
    return False

