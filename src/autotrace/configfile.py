"""Finding and reading the configuration file: ``[tool.autotrace]`` or ``autotrace.toml``.

As pytest does, the search starts in the current directory and climbs to the
filesystem root; the first directory holding an ``autotrace.toml`` (counted even
when empty: it is autotrace's own file, so it wins over a ``pyproject.toml``
beside it) or a ``pyproject.toml`` with a ``[tool.autotrace]`` table ends it. A
``pyproject.toml`` without the table does not stop the search (a sub-package's
own one inside a repository configured at its top). ``OTEL_PYTHON_AUTOTRACE_CONFIG``
names the file instead (as ``COVERAGE_RCFILE`` does), or ``none`` reads none.

This module knows TOML and paths only; what the keys mean, and checking them, is
``config``'s (``read_settings``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # the maintained backport, a dependency on 3.10 only
    import tomli as tomllib

ENV_CONFIG = "OTEL_PYTHON_AUTOTRACE_CONFIG"
PYPROJECT = "pyproject.toml"
OWN_FILE = "autotrace.toml"
TABLE = "[tool.autotrace]"
#: The value of ``ENV_CONFIG`` that reads no file (the ``autotrace`` command passes it to
#: the program, having turned the file's values into variables).
NO_FILE = "none"


class ConfigFileError(ValueError):
    """The configuration file cannot be read, or holds an unknown key or a bad value."""


@dataclass(frozen=True)
class ConfigFile:
    """The settings table of one file, as TOML gave it (keys not checked yet)."""

    path: str  # absolute
    table: dict[str, Any]

    @property
    def where(self) -> str:
        """The file and table, as messages name them."""
        return f"{self.path} {TABLE}" if os.path.basename(self.path) == PYPROJECT else self.path


_cache: dict[tuple[str, int, int], ConfigFile] = {}


def find(environ: Any, start: str | None = None) -> ConfigFile | None:
    """The configuration file in force for a process with ``environ`` in ``start`` (the
    current directory), or None. Raises ``ConfigFileError`` for a named file that is
    missing and for a file found that is not valid TOML (naming the file and line)."""
    named = (environ.get(ENV_CONFIG) or "").strip()
    if named.lower() == NO_FILE:
        return None
    if named:
        path = os.path.abspath(os.path.expanduser(named))
        if not os.path.isfile(path):
            raise ConfigFileError(f"{ENV_CONFIG}={named!r}: no such file; name an existing "
                                  f"{PYPROJECT} or {OWN_FILE}, or set {ENV_CONFIG}={NO_FILE} "
                                  "to read none")
        return _read(path)
    try:
        directory = os.path.abspath(start if start is not None else os.getcwd())
    except OSError:  # the current directory was removed: nothing to find
        return None
    while True:
        own = os.path.join(directory, OWN_FILE)
        if os.path.isfile(own):
            return _read(own)
        pyproject = os.path.join(directory, PYPROJECT)
        if os.path.isfile(pyproject):
            found = _read(pyproject)
            if found is not None:
                return found
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _read(path: str) -> ConfigFile | None:
    """The settings table of ``path`` (None: a ``pyproject.toml`` without one)."""
    try:
        status = os.stat(path)
        key = (path, status.st_mtime_ns, status.st_size)
        cached = _cache.get(key)
        if cached is not None:
            return cached if cached.table is not _NO_TABLE else None
        with open(path, "rb") as stream:
            document = tomllib.load(stream)
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line L, column C)"
        raise ConfigFileError(f"{path} is not valid TOML: {exc}; fix the file, or set "
                              f"{ENV_CONFIG}={NO_FILE} to read no configuration file") from None
    if os.path.basename(path) != PYPROJECT:
        table: Any = document
    else:
        tool = document.get("tool")
        table = tool.get("autotrace", _NO_TABLE) if isinstance(tool, dict) else _NO_TABLE
        if table is not _NO_TABLE and not isinstance(table, dict):
            raise ConfigFileError(f"{path}: tool.autotrace must be a table ({TABLE} with "
                                  "one key per option), not a value")
    found = ConfigFile(path, table)
    _cache[key] = found
    return found if table is not _NO_TABLE else None


_NO_TABLE: dict[str, Any] = {}
