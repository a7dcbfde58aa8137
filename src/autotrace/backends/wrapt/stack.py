"""Which functions look at their callers' frames (they run unwrapped under wrapt).

A Python-level wrapper is a real frame: ``sys._getframe(1)`` in a traced function
would find the wrapper, not the caller. Kept apart from ``wrappers`` so that
deciding costs no ``wrapt`` import.
"""

from __future__ import annotations

from types import CodeType
from typing import Any

#: Names a function reads when it inspects the stack (``sys._getframe(1)``,
#: ``inspect.currentframe().f_back``, ``warnings.warn(..., stacklevel=2)``): a
#: Python-level wrapper's frame would be one of the frames it finds.
STACK_NAMES = frozenset({"_getframe", "currentframe", "f_back", "getouterframes",
                          "getinnerframes", "extract_stack", "format_stack", "print_stack",
                          "walk_stack", "_getframemodulename"})


def inspects_stack(code: Any) -> bool:
    """Whether ``code`` looks at its callers' frames (then it runs unwrapped)."""
    if not isinstance(code, CodeType):
        return False
    names = code.co_names
    if not STACK_NAMES.isdisjoint(names) or ("stack" in names and "inspect" in names):
        return True
    for const in code.co_consts:
        if type(const) is tuple and "stacklevel" in const:
            return True  # a keyword argument's name
    return False
