"""autotrace's bootstrap, first on PYTHONPATH in every process the ``autotrace`` command starts.

It starts autotrace from the ``OTEL_PYTHON_AUTOTRACE_*`` environment, then
runs the ``sitecustomize`` it hides, if there is one, as ``site`` would have.
This directory holds nothing else: it must not shadow any other module.
"""

import os
import sys


def _start() -> None:
    try:
        from autotrace.zerocode.bootstrap import boot
    except Exception as exc:  # autotrace not installed for this interpreter
        sys.stderr.write(f"autotrace: cannot start in {sys.executable} ({type(exc).__name__}: "
                         f"{exc}); this process runs untraced\n")
        return
    boot()


def _chain() -> None:
    """Import the next ``sitecustomize`` on sys.path, reporting errors as ``site`` does."""
    here = os.path.dirname(os.path.abspath(__file__))
    ours = sys.modules.get("sitecustomize")
    sys.path[:] = [entry for entry in sys.path
                   if os.path.abspath(entry or os.curdir) != here]
    sys.modules.pop("sitecustomize", None)
    try:
        import sitecustomize  # type: ignore[import-not-found]  # noqa: F401  (the next one)
    except ImportError as exc:
        if exc.name != "sitecustomize":
            _report(exc)
        if ours is not None:
            sys.modules["sitecustomize"] = ours
    except Exception as exc:
        _report(exc)
        if ours is not None:
            sys.modules["sitecustomize"] = ours


def _report(exc: BaseException) -> None:
    if sys.flags.verbose:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    else:
        sys.stderr.write("Error in sitecustomize; set PYTHONVERBOSE for traceback:\n"
                         f"{type(exc).__name__}: {exc}\n")


try:
    _start()
finally:
    _chain()
