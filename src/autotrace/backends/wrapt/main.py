"""Tracing the functions of a module that is run, not imported (``python app.py``, ``-m``).

The wrapt backend wraps a module's functions after its body has run, but a
run module's body *is* the program: by the time it ends, ``main()`` has
already been called. So its source is rewritten before it is compiled: after
every module-level ``def``, ``async def`` and ``class`` statement (also those
nested in module-level ``if``/``try``/``with``/``for``/``while``/``match``
blocks, never inside function bodies) one statement is added that wraps that
name in the module's globals with the backend's usual machinery (discovery
targets, ``Patch`` records, so methods are covered and uninstall restores)::

    def main(): ...
    __import__("autotrace.backends.wrapt.main", fromlist=["_"]).instrument_name(
        globals(), "main", 1)

The added statement binds no new name in the user's globals and carries the
location of the ``def`` it follows, so user statements keep their line
numbers. A source that rebinds ``globals`` or ``__import__`` at module level
is compiled unchanged.
"""

from __future__ import annotations

import ast
import itertools
import os
import threading
import weakref
from collections.abc import Iterator
from types import CodeType
from typing import TYPE_CHECKING, Any, Union

from ..._log import log_once

if TYPE_CHECKING:
    from .backend import WraptBackend

_HELPER_NAMES = frozenset({"globals", "__import__"})
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)

_tokens = itertools.count(1)
_lock = threading.Lock()
_backends: weakref.WeakValueDictionary[int, WraptBackend] = weakref.WeakValueDictionary()


def compile_main(backend: WraptBackend, source: Union[str, bytes], filename: str,
                 module: str) -> CodeType:
    """Compile ``source`` so that ``backend`` wraps each top-level definition as it is made."""
    tree = ast.parse(source, filename, "exec")
    stem = os.path.splitext(os.path.basename(filename))[0] if module == "__main__" else module
    if not backend.may_trace(stem) or _rebinds_helpers(tree):
        return compile(tree, filename, "exec", dont_inherit=True)
    with _lock:
        token = next(_tokens)
        _backends[token] = backend
    tree.body = _instrument_block(tree.body, token)
    ast.fix_missing_locations(tree)
    return compile(tree, filename, "exec", dont_inherit=True)


def instrument_name(namespace: dict[str, Any], name: str, token: int) -> None:
    """Called by the rewritten module right after ``name`` was (re)bound."""
    backend = _backends.get(token)
    if backend is None:
        return
    try:
        backend.instrument_name(namespace, name)
    except Exception:
        log_once(f"main:{name}", "autotrace: could not wrap %s in the main module; it runs "
                 "untraced", name)


def _instrument_block(body: list[ast.stmt], token: int) -> list[ast.stmt]:
    out: list[ast.stmt] = []
    for stmt in body:
        _instrument_children(stmt, token)
        out.append(stmt)
        if isinstance(stmt, _DEFINITIONS):
            out.append(_call_for(stmt, token))
    return out


def _instrument_children(stmt: ast.stmt, token: int) -> None:
    """Recurse into the blocks of module-level compound statements (not defs)."""
    if isinstance(stmt, _DEFINITIONS):
        return
    for field in ("body", "orelse", "finalbody"):
        block = getattr(stmt, field, None)
        if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
            setattr(stmt, field, _instrument_block(block, token))
    for handler in getattr(stmt, "handlers", ()) or ():
        handler.body = _instrument_block(handler.body, token)
    for case in getattr(stmt, "cases", ()) or ():
        case.body = _instrument_block(case.body, token)


def _call_for(definition: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef,
              token: int) -> ast.stmt:
    helper = ast.Call(
        func=ast.Name(id="__import__", ctx=ast.Load()),
        args=[ast.Constant(value=__name__)],
        keywords=[ast.keyword(arg="fromlist", value=ast.List(elts=[ast.Constant(value="_")],
                                                             ctx=ast.Load()))],
    )
    call = ast.Call(
        func=ast.Attribute(value=helper, attr="instrument_name", ctx=ast.Load()),
        args=[ast.Call(func=ast.Name(id="globals", ctx=ast.Load()), args=[], keywords=[]),
              ast.Constant(value=definition.name), ast.Constant(value=token)],
        keywords=[],
    )
    stmt = ast.Expr(value=call)
    # The def line itself: tracebacks through the helper point at the def,
    # and no user statement moves.
    for node in ast.walk(stmt):
        if "lineno" in node._attributes:
            for attr, value in (("lineno", definition.lineno),
                                ("col_offset", definition.col_offset),
                                ("end_lineno", definition.lineno),
                                ("end_col_offset", definition.col_offset)):
                setattr(node, attr, value)
    return stmt


def _rebinds_helpers(tree: ast.Module) -> bool:
    """Whether module-level code could rebind ``globals`` or ``__import__``."""
    for node in _module_level_nodes(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            if node.id in _HELPER_NAMES:
                return True
        elif isinstance(node, _DEFINITIONS) and node.name in _HELPER_NAMES:
            return True
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if (alias.asname or alias.name.split(".", 1)[0]) in _HELPER_NAMES:
                    return True
        elif isinstance(node, (ast.Global, ast.Nonlocal)) and _HELPER_NAMES & set(node.names):
            return True
    return False


def _module_level_nodes(tree: ast.Module) -> Iterator[ast.AST]:
    """Every node that can bind a module-level name.

    Function and class bodies bind their own names, except through a
    ``global`` statement, which is still reported.
    """
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (*_DEFINITIONS, ast.Lambda)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Global):
                    yield inner
            continue
        stack.extend(ast.iter_child_nodes(node))
