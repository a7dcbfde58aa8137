"""One line at exit when the ``autotrace`` command's patterns selected nothing at all.

A run that prints no tree because no name matched looks like a run of a
program that made no calls: the line says which patterns were given and how
names are formed. Only the process the command started (the one that kept
its pid through ``exec``) says it: children, often other programs, do not.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from ..core import Installation

#: Set by the command to its own pid, which the program keeps through ``exec``.
COMMAND_PID = "_AUTOTRACE_COMMAND_PID"


def is_command_process() -> bool:
    return os.environ.get(COMMAND_PID) == str(os.getpid())


def report_if_nothing_matches(installation: Installation, stream: TextIO) -> None:
    """At exit, say so if ``installation`` instrumented no function in this process."""
    if is_command_process():
        atexit.register(_report, installation, stream)


def nothing_matched_message(patterns: tuple[str, ...], script: str | None) -> str:
    stem = os.path.splitext(os.path.basename(script))[0] if script else ""
    example = (f"{stem}.main for main() in {os.path.basename(script or '')}" if stem
               else "app.main for main() in app.py")
    return ("autotrace: the patterns " + ", ".join(repr(p) for p in patterns)
            + " matched no function in this run. Names are module.qualname: a script's "
            f"functions are <file stem>.<qualname> ({example}; __main__ matches nothing), "
            "a package's myapp.db.Repo.save; compiled extension modules (C, Cython, mypyc "
            "builds) cannot be traced.")


def _report(installation: Installation, stream: TextIO) -> None:
    try:
        if installation.matched or not installation.active:
            return
        script = sys.argv[0] if sys.argv and sys.argv[0].endswith(".py") else None
        stream.write(nothing_matched_message(installation.config.patterns, script) + "\n")
        stream.flush()
    except Exception:  # a closed stream at exit: nothing to say it on
        pass
