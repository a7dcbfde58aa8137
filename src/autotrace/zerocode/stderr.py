"""The stderr the ``autotrace`` command was started with, for every process it runs.

Kept apart from the call tree (``console``), which needs the SDK: the bootstrap
opens this stream at the start of every process, and must stay cheap.
"""

from __future__ import annotations

import os
import stat
import sys
from typing import TextIO

from .notices import COMMAND_PID

#: Set by the command: which stderr it was started with, ``dev:inode:path`` (path: a
#: terminal's or a regular file's, else empty), so that children find it again.
STDERR_ENV = "_AUTOTRACE_STDERR"


def describe_stderr() -> str:
    """This process's stderr as ``STDERR_ENV`` holds it (the command calls this)."""
    try:
        st = os.fstat(2)
    except OSError:
        return ""
    path = ""
    try:
        if os.isatty(2):
            path = os.ttyname(2)
        elif stat.S_ISREG(st.st_mode) and os.path.exists("/proc/self/fd/2"):
            path = os.path.realpath("/proc/self/fd/2")
    except OSError:
        path = ""
    return f"{st.st_dev}:{st.st_ino}:{path}"


def append_to_stderr_file() -> None:
    """Put a regular-file stderr (``2> log``) in append mode, before the program starts.

    A child that finds the command's stderr by its path gets a file description of
    its own; without ``O_APPEND`` on both, each would write at its own offset and
    overwrite the other's lines. For a file only this command writes, appending and
    writing in sequence give the same file."""
    try:
        if stat.S_ISREG(os.fstat(2).st_mode):
            import fcntl

            fcntl.fcntl(2, fcntl.F_SETFL, fcntl.fcntl(2, fcntl.F_GETFL) | os.O_APPEND)
    except (OSError, ImportError):
        pass


def open_stderr_copy() -> TextIO:
    """A stream on the stderr the ``autotrace`` command was started with.

    Output keeps going where the user sent the command's stderr even when the
    program later swaps, captures (pytest) or closes ``sys.stderr``; and a child
    whose stderr its parent captures (``subprocess.run(..., capture_output=True)``)
    writes its tree there too, not into what its parent reads. The child finds that
    stderr by identity (device and inode): its own fd 2 if it is the same; else the
    path of the command's terminal or file (appending); else, on Linux, the command
    process's fd 2 through ``/proc`` (a pipe). Failing all, output is dropped.
    """
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    fd = _command_stderr_fd()
    if fd is None:
        return open(os.devnull, "w", encoding=encoding)
    try:
        return open(fd, "w", encoding=encoding, errors="backslashreplace", buffering=1)
    except (OSError, ValueError):
        return sys.stderr


def _command_stderr_fd() -> int | None:
    """A new fd on the command's stderr (see ``open_stderr_copy``), or None."""
    spec = os.environ.get(STDERR_ENV, "")
    try:
        dev_text, ino_text, path = spec.split(":", 2)
        wanted = (int(dev_text), int(ino_text))
    except ValueError:  # not under the command (opentelemetry-instrument): our own stderr
        return _dup_stderr()
    if _identity(2) in (wanted, None):
        return _dup_stderr()
    candidates = [path] if path else []
    pid = os.environ.get(COMMAND_PID, "")
    if pid.isdigit():
        candidates.append(f"/proc/{pid}/fd/2")
    for candidate in candidates:
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
                         | getattr(os, "O_NOCTTY", 0))
        except OSError:
            continue
        if _identity(fd) == wanted:
            return fd
        os.close(fd)
    return None


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _dup_stderr() -> int | None:
    try:
        return os.dup(2)
    except OSError:
        return None
