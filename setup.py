"""The compiled core (``src/autotrace/record/_core.c``); everything else is in pyproject.toml.

One extension module, ``autotrace.record._core``, built from each C file beside the Python
it speeds up: ``record/_core.c`` (the per-call path) and ``backends/_monitoring.c`` (a
module's functions registered with sys.monitoring at import).

The extension is optional: without a C compiler (or Python headers) the install still
succeeds, with the pure-Python core, and says so here once; at run time
``autotrace --version`` and the debug log name the core that runs.
"""

import os
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build the extension if this machine can; otherwise one clear notice."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all
            self._notice(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # the compiler failed
            self._notice(exc)

    @staticmethod
    def _notice(exc: Exception) -> None:
        print(f"autotrace: the compiled core was not built ({exc}); the pure-Python core "
              "will run. To build it, install a C compiler and the Python headers "
              "(e.g. apt install gcc python3-dev) and reinstall.", file=sys.stderr)


#: Debian's multiarch headers: pyconfig.h includes <x86_64-linux-gnu/pythonX.Y/pyconfig.h>,
#: found only when the directory above the headers is searched too (an interpreter
#: unpacked outside /usr, as CI's 3.14 and 3.15, does not have it on the default path).
_INCLUDE_ROOT = os.path.dirname(sysconfig.get_path("include") or "")

setup(
    ext_modules=[Extension("autotrace.record._core", ["src/autotrace/record/_core.c",
                                                   "src/autotrace/backends/_monitoring.c"],
                           include_dirs=[_INCLUDE_ROOT] if _INCLUDE_ROOT else [],
                           optional=True)],
    cmdclass={"build_ext": OptionalBuildExt},
)
