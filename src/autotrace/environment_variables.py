"""autotrace's environment variables, for ``opentelemetry-instrument``.

Registered as an ``opentelemetry_environment_variables`` entry point: every
``OTEL_*`` name here becomes an option of ``opentelemetry-instrument`` with
the ``OTEL_``/``OTEL_PYTHON_`` prefix dropped and lower-cased, so
``--autotrace_patterns=myapp`` sets ``OTEL_PYTHON_AUTOTRACE_PATTERNS``.
"""

OTEL_PYTHON_AUTOTRACE_PATTERNS = "OTEL_PYTHON_AUTOTRACE_PATTERNS"
"""Comma-separated patterns of the functions to trace (required)."""

OTEL_PYTHON_AUTOTRACE_EXCLUDE = "OTEL_PYTHON_AUTOTRACE_EXCLUDE"
"""Comma-separated patterns never traced."""

OTEL_PYTHON_AUTOTRACE_BACKEND = "OTEL_PYTHON_AUTOTRACE_BACKEND"
"""``wrapt`` (default), ``monitoring`` (3.12+) or ``auto``."""

OTEL_PYTHON_AUTOTRACE_CAPTURE_ARGS = "OTEL_PYTHON_AUTOTRACE_CAPTURE_ARGS"
"""``true``/``false``: record arguments."""

OTEL_PYTHON_AUTOTRACE_CAPTURE_RETURN = "OTEL_PYTHON_AUTOTRACE_CAPTURE_RETURN"
"""``true``/``false``: record return values."""

OTEL_PYTHON_AUTOTRACE_REPR_OBJECTS = "OTEL_PYTHON_AUTOTRACE_REPR_OBJECTS"
"""``true``/``false``: render any object with its own ``repr()``."""

OTEL_PYTHON_AUTOTRACE_MAX_VALUE_LENGTH = "OTEL_PYTHON_AUTOTRACE_MAX_VALUE_LENGTH"
"""Longest string attribute (>= 16)."""

OTEL_PYTHON_AUTOTRACE_REDACT = "OTEL_PYTHON_AUTOTRACE_REDACT"
"""Comma-separated regexes of secret parameter names and dict keys."""
