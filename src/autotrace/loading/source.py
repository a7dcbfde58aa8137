"""Compiling a module's source the way its loader would, on every supported Python.

3.15 compiles a module with its name (``SourceLoader.source_to_code(data, path,
fullname)`` passes ``module=fullname`` to ``compile``), so that ``-W`` filters
and ``warnings.filterwarnings(module=...)`` see ``pkg.mod`` for a syntax warning,
not a name guessed from the file. autotrace compiles some modules itself (the
wrapt backend's rewrite, run modules): it passes the name too, or a filter
written for the module would treat it differently under autotrace.
"""

from __future__ import annotations

import ast
import sys
from importlib.machinery import SourceFileLoader
from types import CodeType
from typing import Any, Union

#: ``compile()`` and ``ast.parse()`` take ``module=`` from 3.15 on.
_MODULE_KEYWORD = sys.version_info >= (3, 15)


def parse_source(source: Union[str, bytes], filename: str, module: str) -> ast.Module:
    if _MODULE_KEYWORD:
        return ast.parse(source, filename, "exec", module=module)  # type: ignore[call-overload, no-any-return, unused-ignore]
    return ast.parse(source, filename, "exec")


def compile_source(source: Union[str, bytes, ast.Module], filename: str,
                   module: str) -> CodeType:
    if _MODULE_KEYWORD:
        return compile(source, filename, "exec", dont_inherit=True,  # type: ignore[call-overload, no-any-return, unused-ignore]
                       module=module)
    return compile(source, filename, "exec", dont_inherit=True)


def plain_source_loader(loader: Any) -> bool:
    """A ``SourceFileLoader`` that makes code the usual way: one that transforms it
    (typeguard, beartype, another rewriter: its own ``source_to_code`` or ``get_code``,
    whatever its signature) keeps its own code; autotrace never compiles for it."""
    cls = type(loader)
    return (isinstance(loader, SourceFileLoader)
            and cls.source_to_code is SourceFileLoader.source_to_code
            and cls.get_code is SourceFileLoader.get_code
            and cls.exec_module is SourceFileLoader.exec_module
            and cls.get_data is SourceFileLoader.get_data)
