"""The compiled core (``src/autotrace/record/_core.c``); everything else is in pyproject.toml.

The extension is optional: without a C compiler (or Python headers) the install still
succeeds, with the pure-Python core, and says so here once; at run time
``autotrace --version`` and the debug log name the core that runs.
"""

import sys

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


setup(
    ext_modules=[Extension("autotrace.record._core", ["src/autotrace/record/_core.c"],
                           optional=True)],
    cmdclass={"build_ext": OptionalBuildExt},
)
