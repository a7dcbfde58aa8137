"""Whether the compiled per-call path (``_core.c``) is here, loaded once per process.

``OTEL_PYTHON_AUTOTRACE_CORE=python`` in the environment keeps it from being loaded at
all (the pure-Python reference runs alone, as on a machine without a compiler); the
option itself is validated and applied at ``install()`` (``core.select_core``).
"""

from __future__ import annotations

import os
import sysconfig
from types import ModuleType

ENV = "OTEL_PYTHON_AUTOTRACE_CORE"

#: The extension module, or None; ``why_not`` says why when it is None.
extension: ModuleType | None = None
why_not = ""

if os.environ.get(ENV, "").strip().lower() == "python":
    why_not = f"{ENV}=python"
elif sysconfig.get_config_var("Py_GIL_DISABLED"):
    # Importing an extension that needs the GIL turns it back on for the whole process
    # (with a warning): autotrace must not change the program it is imported into.
    why_not = "this is a free-threaded build (the compiled core needs the GIL)"
else:
    try:
        from . import _core as extension  # type: ignore[attr-defined, no-redef]
    except ImportError as exc:
        here = os.path.dirname(os.path.abspath(__file__))
        if any(name.startswith("_core.") and not name.endswith(".c")
               for name in os.listdir(here)):
            why_not = f"the extension autotrace.record._core did not load ({exc})"
        else:  # the install had no C compiler or no Python headers
            why_not = ("the extension autotrace.record._core was not built when autotrace "
                       "was installed")

#: What this source expects of the extension (``INTERFACE`` in ``_core.c``, bumped with
#: every change to what it offers): one built from older source (an editable install not
#: rebuilt) is not loaded rather than failing at import.
INTERFACE = 13
if extension is not None:
    built = getattr(extension, "INTERFACE", 1)
    if built != INTERFACE:
        extension = None
        why_not = (f"the extension autotrace.record._core was built from older source "
                   f"(interface {built}, this source needs {INTERFACE}); reinstall "
                   f"autotrace to rebuild it")
