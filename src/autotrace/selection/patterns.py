"""Which names are traced: patterns, excludes, and modules that are off limits.

A name is ``module.qualname`` (``myapp.db.Repo.save``). A pattern is an
``fnmatch`` glob, case-sensitive, whose ``*`` also crosses dots, and it selects
a name when it matches the name or any dotted prefix of it: ``myapp`` selects
``myapp.x`` and ``myapp.sub.Cls.m`` but never ``myapplication.x``. Exclude
patterns use the same rule and win.

Some modules are never traced whatever the patterns say (autotrace and what it
runs on: OpenTelemetry, wrapt, the import machinery). The standard library and
the exporters' own dependencies are traced only when a pattern names their
top-level package literally (``logging``, not ``*``), because tracing them by
accident floods the trace and can recurse through the exporter.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable

from ..config import Config

#: Never traced: autotrace itself and the machinery a span passes through.
NEVER_TRACED = frozenset({
    "autotrace", "opentelemetry", "wrapt", "importlib", "_frozen_importlib",
    "_frozen_importlib_external", "zipimport", "_imp", "importlib_metadata",
    "importlib_resources", "zipp", "threading", "_thread", "contextvars", "weakref",
    "_weakrefset", "reprlib", "encodings", "codecs", "abc", "_abc", "sitecustomize",
    "usercustomize", "site",
})

#: Traced only when a pattern names them literally (see module docstring).
_EXPLICIT_ONLY = frozenset(getattr(sys, "stdlib_module_names", ())) | frozenset({
    "urllib3", "requests", "grpc", "google", "charset_normalizer", "idna", "certifi",
    "typing_extensions", "deprecated", "pkg_resources", "setuptools", "_distutils_hack",
    "pip", "_pytest", "pytest", "pluggy",
})

_WILDCARDS = frozenset("*?[")

def _glob_to_regex(pattern: str) -> str:
    """Translate one glob (``*`` crosses dots) plus the dotted-prefix rule."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            end = pattern.find("]", i + 1 if i < n and pattern[i] == "!" else i)
            if end < 0:
                out.append(re.escape(ch))
                continue
            body = pattern[i:end]
            i = end + 1
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
        else:
            out.append(re.escape(ch))
    return "".join(out) + r"(?:\..*)?"


def _compile(patterns: Iterable[str]) -> re.Pattern[str] | None:
    parts = [_glob_to_regex(p) for p in patterns]
    if not parts:
        return None
    return re.compile("(?:" + "|".join(parts) + ")", re.DOTALL)


def _literal_prefix(pattern: str) -> tuple[str, bool]:
    """The part before the first wildcard, and whether the pattern has none."""
    for i, ch in enumerate(pattern):
        if ch in _WILDCARDS:
            return pattern[:i], False
    return pattern, True


def _reaches(prefixes: list[tuple[str, bool]], module: str) -> bool:
    """Whether a pattern with one of these literal prefixes can match in ``module``."""
    for prefix, literal in prefixes:
        if literal:
            if (module == prefix or module.startswith(prefix + ".")
                    or prefix.startswith(module + ".")):
                return True
        elif module.startswith(prefix) or prefix.startswith(module + "."):
            return True
    return False


class Patterns:
    """Answers "is this name traced?" and "may this module hold traced names?" from
    the names alone (patterns, excludes, modules off limits)."""

    def __init__(self, config: Config) -> None:
        self.patterns = tuple(config.patterns)
        self.exclude = tuple(config.exclude)
        self._include = _compile(config.patterns)
        self._exclude = _compile(config.exclude)
        self._prefixes = [_literal_prefix(p) for p in config.patterns]
        # Top-level packages that some pattern names literally (opt-in for stdlib).
        self._named_tops = frozenset(
            p.split(".", 1)[0] for p in config.patterns
            if not (_WILDCARDS & set(p.split(".", 1)[0]))
        )
        self._module_cache: dict[str, bool] = {}
        self._exclude_prefixes = [_literal_prefix(p) for p in config.exclude]
        self._whole_cache: dict[str, bool] = {}

    def module_allowed(self, module: str) -> bool:
        """Whether rules other than the patterns permit tracing in ``module``."""
        top = module.split(".", 1)[0]
        if top in NEVER_TRACED:
            return False
        if top in _EXPLICIT_ONLY and top not in self._named_tops:
            return False
        return True

    def may_contain(self, module: str) -> bool:
        """Whether ``module`` can define a traced name (cheap, cached)."""
        cached = self._module_cache.get(module)
        if cached is None:
            cached = self._module_cache[module] = self._may_contain(module)
        return cached

    def _may_contain(self, module: str) -> bool:
        if not self.module_allowed(module):
            return False
        if self._exclude is not None and self._exclude.fullmatch(module):
            return False
        return _reaches(self._prefixes, module)

    def whole(self, module: str) -> bool:
        """Every name in ``module`` is traced: the module may hold traced names, a
        pattern selects the module itself and no exclude pattern can reach inside it.
        Saves a regex match per name."""
        whole = self._whole_cache.get(module)
        if whole is None:
            whole = self._whole_cache[module] = (
                self.may_contain(module)
                and self._include is not None and self._include.fullmatch(module) is not None
                and not _reaches(self._exclude_prefixes, module))
        return whole

    def matches(self, module: str, qualname: str) -> bool:
        """Whether the function ``module.qualname`` is traced."""
        if not self.may_contain(module):
            return False
        if self.whole(module):
            return True
        name = f"{module}.{qualname}"
        if self._include is None or not self._include.fullmatch(name):
            return False
        return self._exclude is None or not self._exclude.fullmatch(name)
