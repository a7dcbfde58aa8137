"""User configuration: validated once at ``install()``, immutable afterwards.

Every value comes from an explicit ``install()`` argument, else from its
``OTEL_PYTHON_AUTOTRACE_*`` environment variable, else from the default.
Bad values fail here, before anything is installed, with a message naming
the value and the fix; the rest of autotrace may trust a ``Config``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import TracerProvider

BACKENDS = ("wrapt", "monitoring", "auto")

ENV_PATTERNS = "OTEL_PYTHON_AUTOTRACE_PATTERNS"
ENV_EXCLUDE = "OTEL_PYTHON_AUTOTRACE_EXCLUDE"
ENV_BACKEND = "OTEL_PYTHON_AUTOTRACE_BACKEND"
ENV_CAPTURE_ARGS = "OTEL_PYTHON_AUTOTRACE_CAPTURE_ARGS"
ENV_CAPTURE_RETURN = "OTEL_PYTHON_AUTOTRACE_CAPTURE_RETURN"
ENV_REPR_OBJECTS = "OTEL_PYTHON_AUTOTRACE_REPR_OBJECTS"
ENV_MAX_VALUE_LENGTH = "OTEL_PYTHON_AUTOTRACE_MAX_VALUE_LENGTH"
ENV_REDACT = "OTEL_PYTHON_AUTOTRACE_REDACT"

#: Parameter names and dict keys matching any of these (case-insensitive
#: ``re.search``) are recorded as ``[REDACTED]``. ``auth`` spares ``author``.
DEFAULT_REDACT: tuple[str, ...] = (
    "password",
    "passwd",
    "secret",
    "token",
    "api[-_]?key",
    "auth(?!ors?\\b)",
    "credential",
    "private[-_]?key",
    "cookie",
    "session",
    "jwt",
)

DEFAULT_MAX_VALUE_LENGTH = 256
_MIN_VALUE_LENGTH = 16

# A pattern is a dotted name made of identifier characters, glob wildcards
# (* ? [...]) and the ``<locals>``/``<lambda>`` markers CPython puts in qualnames.
_PATTERN_CHARS = re.compile(r"[\w.*?\[\]!<>\-]+")  # \w: identifiers may be non-ASCII
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclass(frozen=True)
class Config:
    """The validated settings of one installation."""

    patterns: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    backend: str = "wrapt"
    capture_args: bool = True
    capture_return: bool = True
    repr_objects: bool = False
    max_value_length: int = DEFAULT_MAX_VALUE_LENGTH
    redact: tuple[str, ...] = DEFAULT_REDACT
    tracer_provider: TracerProvider | None = None


def make_config(
    patterns: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    backend: str | None = None,
    capture_args: bool | None = None,
    capture_return: bool | None = None,
    repr_objects: bool | None = None,
    max_value_length: int | None = None,
    redact: str | Sequence[str] | None = None,
    tracer_provider: TracerProvider | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Merge arguments over the environment over defaults, and validate."""
    env = os.environ if environ is None else environ

    if patterns is None:
        raw = env.get(ENV_PATTERNS, "")
        if not raw.strip():
            raise ValueError(
                "autotrace.install() needs patterns: pass patterns=['myapp'] "
                f"or set {ENV_PATTERNS}=myapp (comma-separated)"
            )
        pattern_tuple = _patterns(_split(raw), ENV_PATTERNS, allow_empty=False)
    else:
        pattern_tuple = _patterns(patterns, "patterns", allow_empty=False)

    if exclude is None:
        exclude_tuple = _patterns(_split(env.get(ENV_EXCLUDE, "")), ENV_EXCLUDE, allow_empty=True)
    else:
        exclude_tuple = _patterns(exclude, "exclude", allow_empty=True)

    if backend is None:
        backend = env.get(ENV_BACKEND, "").strip().lower() or "wrapt"
        backend_source = ENV_BACKEND
    else:
        backend_source = "backend"
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(
            f"{backend_source}={backend!r} is not a backend; use one of "
            + ", ".join(repr(b) for b in BACKENDS)
        )

    if redact is None:
        raw_redact = env.get(ENV_REDACT)
        redact_tuple = DEFAULT_REDACT if raw_redact is None else tuple(_split(raw_redact))
        redact_source = ENV_REDACT
    else:
        redact_tuple = _strings(redact, "redact")
        redact_source = "redact"
    for expr in redact_tuple:
        try:
            re.compile(expr)
        except re.error as exc:
            raise ValueError(
                f"{redact_source} entry {expr!r} is not a valid regular expression ({exc}); "
                "fix or escape it (re.escape)"
            ) from None

    length = _int_setting(max_value_length, env, ENV_MAX_VALUE_LENGTH, "max_value_length",
                          DEFAULT_MAX_VALUE_LENGTH)
    if length < _MIN_VALUE_LENGTH:
        source = "max_value_length" if max_value_length is not None else ENV_MAX_VALUE_LENGTH
        raise ValueError(
            f"{source}={length} is too small; use an integer >= {_MIN_VALUE_LENGTH}"
        )

    if isinstance(tracer_provider, type):
        raise TypeError(
            f"tracer_provider={tracer_provider!r} is a class; pass an instance, e.g. "
            "tracer_provider=TracerProvider(), or None for the global one"
        )
    if tracer_provider is not None and not hasattr(tracer_provider, "get_tracer"):
        raise TypeError(
            f"tracer_provider={tracer_provider!r} is not a TracerProvider; pass an "
            "opentelemetry TracerProvider or None for the global one"
        )

    return Config(
        patterns=pattern_tuple,
        exclude=exclude_tuple,
        backend=backend,
        capture_args=_bool_setting(capture_args, env, ENV_CAPTURE_ARGS, "capture_args", True),
        capture_return=_bool_setting(capture_return, env, ENV_CAPTURE_RETURN, "capture_return",
                                     True),
        repr_objects=_bool_setting(repr_objects, env, ENV_REPR_OBJECTS, "repr_objects", False),
        max_value_length=length,
        redact=redact_tuple,
        tracer_provider=tracer_provider,
    )


def resolve_backend(name: str) -> str:
    """Turn ``auto`` into the concrete backend for this interpreter."""
    if name == "auto":
        return "monitoring" if sys.version_info >= (3, 12) else "wrapt"
    return name


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (bytes, bytearray)) or not isinstance(value, Sequence):
        raise TypeError(
            f"{name}={value!r} must be a string or a list of strings, e.g. {name}=['myapp']"
        )
    for item in value:
        if not isinstance(item, str):
            raise TypeError(
                f"{name} contains {item!r} ({type(item).__name__}); every entry must be a "
                f"string, e.g. {name}=['myapp']"
            )
    return tuple(value)


def _patterns(value: Any, name: str, *, allow_empty: bool) -> tuple[str, ...]:
    items = _strings(value, name)
    if not items and not allow_empty:
        raise ValueError(f"{name} is empty; give at least one pattern, e.g. {name}=['myapp']")
    for item in items:
        _check_pattern(item, name)
    return items


def _check_pattern(pattern: str, name: str) -> None:
    if not pattern:
        raise ValueError(f"{name} contains an empty string; remove it or name a module, "
                         "e.g. 'myapp'")
    if any(ch.isspace() for ch in pattern):
        raise ValueError(f"{name} entry {pattern!r} contains whitespace; patterns are dotted "
                         "names such as 'myapp.db' (strip the spaces)")
    if "," in pattern:
        raise ValueError(f"{name} entry {pattern!r} contains a comma; pass separate patterns "
                         f"as a list: {pattern.split(',')!r}")
    if not _PATTERN_CHARS.fullmatch(pattern):
        raise ValueError(f"{name} entry {pattern!r} has characters that cannot occur in a "
                         "qualified name; use dotted names with * ? [] wildcards")
    if "" in pattern.split("."):
        raise ValueError(f"{name} entry {pattern!r} has an empty dotted part; write e.g. "
                         "'myapp.db' (no leading, trailing or double dots)")


def _bool_setting(value: Any, env: Mapping[str, str], var: str, name: str,
                  default: bool) -> bool:
    if value is not None:
        if not isinstance(value, bool):
            raise TypeError(f"{name}={value!r} must be True or False")
        return value
    raw = env.get(var)
    if raw is None or not raw.strip():
        return default
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{var}={raw!r} is not a boolean; use true or false")


def _int_setting(value: Any, env: Mapping[str, str], var: str, name: str, default: int) -> int:
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name}={value!r} must be an integer, e.g. {name}={default}")
        return value
    raw = env.get(var)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError(f"{var}={raw!r} is not an integer; use e.g. {var}={default}") from None
