"""A bytecode cache for rewritten modules, next to the normal ``.pyc``.

Modelled on pytest's assertion rewriting: the rewritten code of
``pkg/mod.py`` is stored as ``pkg/__pycache__/mod.cpython-312.autotrace-<tag>.pyc``
(``importlib.util.cache_from_source`` decides the directory, so
``sys.pycache_prefix`` and ``-O`` levels are honoured), where ``<tag>`` is a
digest of the autotrace version, the rewriter's ``FORMAT`` and the selection
(patterns and excludes), since which defs get the decorator is decided when the
source is rewritten. The header holds the source's mtime and size like a timestamp
``.pyc``; any mismatch means a rewrite. Nothing is written when the interpreter would not
write a ``.pyc`` (``sys.dont_write_bytecode``, ``PYTHONDONTWRITEBYTECODE``) or
the directory is not writable; a cache that cannot be read is ignored.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import struct
import sys
from importlib.util import MAGIC_NUMBER, cache_from_source
from types import CodeType

from ..._version import __version__
from .main import FORMAT

#: Stored for a module whose source has no def to rewrite: the loader runs it as usual.
NOTHING = "autotrace: nothing to rewrite"
_HEADER = struct.Struct("<4sIII")


def tag(patterns: tuple[str, ...], exclude: tuple[str, ...]) -> str:
    key = repr((__version__, FORMAT, patterns, exclude)).encode()
    digest = hashlib.sha1(key, usedforsecurity=False)
    return digest.hexdigest()[:16]


def cache_path(source_path: str, cache_tag: str) -> str | None:
    try:
        normal = cache_from_source(source_path)
    except (NotImplementedError, ValueError):
        return None  # sys.implementation.cache_tag is None
    base, ext = os.path.splitext(normal)
    return f"{base}.autotrace-{cache_tag}{ext}"


def read(path: str, mtime: float, size: int) -> CodeType | str | None:
    """The cached code (or ``NOTHING``) if it was made from this very source."""
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError:
        return None
    if len(data) < _HEADER.size:
        return None
    magic, flags, stamp, length = _HEADER.unpack_from(data)
    if (magic != MAGIC_NUMBER or flags != 0 or stamp != (int(mtime) & 0xFFFFFFFF)
            or length != (size & 0xFFFFFFFF)):
        return None
    try:
        code = marshal.loads(data[_HEADER.size:])
    except (EOFError, ValueError, TypeError):
        return None
    return code if isinstance(code, (CodeType, str)) else None


def write(path: str, code: CodeType | str, mtime: float, size: int) -> None:
    """Store ``code`` atomically; silently nothing where a ``.pyc`` could not go."""
    if sys.dont_write_bytecode:
        return
    data = _HEADER.pack(MAGIC_NUMBER, 0, int(mtime) & 0xFFFFFFFF, size & 0xFFFFFFFF)
    data += marshal.dumps(code)
    temporary = f"{path}.{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temporary, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
