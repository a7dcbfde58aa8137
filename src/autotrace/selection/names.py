"""The names functions are selected and reported under, and the dunders left alone.

A function's name is ``module.qualname``. A module that is run rather than
imported is reported under its real name: the module name for
``python -m pkg.mod``, the script's file stem for ``python app.py``
(``__main__``), for multiprocessing's spawn workers, which re-run the main
script as ``__mp_main__``, and for ``runpy.run_path`` (``<run_path>``).
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

#: The names a module runs under when it is run, not imported.
RUN_NAMES = frozenset({"__main__", "__mp_main__", "<run_path>"})

#: Dunder methods that are traced; every other ``__x__`` is skipped because
#: they are hot (``__getattr__``), re-entrant (``__repr__`` during rendering,
#: ``__hash__``/``__eq__`` inside dicts) or called by the interpreter itself.
TRACED_DUNDERS = frozenset({"__init__", "__call__"})


def untraced_dunder(name: str, in_class: bool = True) -> bool:
    """Whether a function called ``name`` is skipped whatever the patterns say: a
    dunder, unless it is a traced one (``TRACED_DUNDERS``) defined in a class body."""
    return (len(name) > 4 and name.startswith("__") and name.endswith("__")
            and not (in_class and name in TRACED_DUNDERS))


def untraced_qualname(qualname: str) -> bool:
    """``untraced_dunder`` for a qualname: its last part, in a class unless it is
    at module level or a closure's (``f.<locals>.__init__``)."""
    owner, _, name = qualname.rpartition(".")
    return untraced_dunder(name, bool(owner) and not owner.endswith("<locals>"))


def script_module_name(filename: str) -> str:
    """The name a script's functions are selected and reported under: its file stem."""
    return os.path.splitext(os.path.basename(filename))[0]


def run_module_name(module: str, filename: str) -> str:
    """``module``, or the file stem when ``module`` is a run name (``__main__``)."""
    return script_module_name(filename) if module in RUN_NAMES else module


def module_name(module: ModuleType) -> str:
    """The name functions of ``module`` are selected and reported under."""
    name = module.__name__
    if name not in RUN_NAMES:
        return name
    return namespace_module_name(vars(module))


def namespace_module_name(namespace: dict[str, Any]) -> str:
    """``module_name`` from a module's globals (what a function defined there sees)."""
    name = namespace.get("__name__")
    if name not in RUN_NAMES:
        return str(name)
    spec = namespace.get("__spec__")
    spec_name = getattr(spec, "name", None)
    if spec_name and spec_name not in RUN_NAMES:
        return str(spec_name)
    path = namespace.get("__file__")
    if isinstance(path, str) and path:
        return script_module_name(path)
    return str(name)
