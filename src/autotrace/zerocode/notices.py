"""One line at exit when the ``autotrace`` command's patterns selected nothing at all.

A run that prints no tree because no name matched looks like a run of a
program that made no calls: the line says which patterns were given and how
names are formed. Only the process the command started (the one that kept
its pid through ``exec``) says it, and only when no process of the run
matched: a gunicorn master or Django's autoreloader parent imports none of
the app, which its workers or child import. The command's process names a
marker file in its children's environment (``MATCHED_FILE``); a child that
matched something creates it at exit, and the command's process, at its own
exit (after its workers' when it waits for them), looks for it and removes it.
"""

from __future__ import annotations

import atexit
import os
import secrets
import sys
import tempfile
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from ..core import Installation

#: Set by the command to its own pid, which the program keeps through ``exec``.
COMMAND_PID = "_AUTOTRACE_COMMAND_PID"
#: Set by the command's process for its descendants: the file a process that matched creates.
MATCHED_FILE = "_AUTOTRACE_MATCHED_FILE"


def is_command_process() -> bool:
    return os.environ.get(COMMAND_PID) == str(os.getpid())


def report_if_nothing_matches(installation: Installation, stream: TextIO) -> None:
    """At exit, say so if ``installation`` instrumented no function in any process of the
    run (this one's descendants mark that they did, in the file this one names)."""
    if is_command_process():
        marker = os.path.join(tempfile.gettempdir(),
                              f"autotrace-{os.getpid()}-{secrets.token_hex(6)}.matched")
        os.environ[MATCHED_FILE] = marker
    else:
        marker = os.environ.get(MATCHED_FILE, "")
    if marker:  # forked children inherit the handler: it decides by pid when it runs
        from .shutdown import before_signal_death

        done: set[int] = set()
        atexit.register(_at_exit, installation, stream, marker, done)
        before_signal_death(lambda: _at_exit(installation, stream, marker, done))


def _at_exit(installation: Installation, stream: TextIO, marker: str, done: set[int]) -> None:
    if os.getpid() in done:
        return
    done.add(os.getpid())
    if is_command_process():
        _report(installation, stream, marker)
    else:
        _mark(installation, marker)


def nothing_matched_message(patterns: tuple[str, ...], script: str | None) -> str:
    from ..selection.names import script_module_name  # at exit only: no start-up cost

    stem = script_module_name(script) if script else ""
    example = (f"{stem}.main for main() in {os.path.basename(script or '')}" if stem
               else "app.main for main() in app.py")
    return ("autotrace: the patterns " + ", ".join(repr(p) for p in patterns)
            + " matched no function in this run. Names are module.qualname: a script's "
            f"functions are <file stem>.<qualname> ({example}; __main__ matches nothing), "
            "a package's myapp.db.Repo.save; compiled extension modules (C, Cython, mypyc "
            "builds) cannot be traced.")


def _mark(installation: Installation, marker: str) -> None:
    """Tell the command's process that this one matched (an empty file; errors ignored)."""
    try:
        if installation.matched:
            flags = os.O_CREAT | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0)
            os.close(os.open(marker, flags, 0o600))
    except Exception:  # no notice is worth a failure at exit
        pass


def _report(installation: Installation, stream: TextIO, marker: str) -> None:
    try:
        elsewhere = os.path.exists(marker)
        if elsewhere:
            os.unlink(marker)
        if installation.matched or elsewhere or not installation.active:
            return
        script = sys.argv[0] if sys.argv and sys.argv[0].endswith(".py") else None
        stream.write(nothing_matched_message(installation.config.patterns, script) + "\n")
        stream.flush()
    except Exception:  # a closed stream at exit: nothing to say it on
        pass
