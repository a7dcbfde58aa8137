"""autotrace's environment variables, for ``opentelemetry-instrument``.

Registered as an ``opentelemetry_environment_variables`` entry point: every
``OTEL_*`` name here becomes an option of ``opentelemetry-instrument`` with
the ``OTEL_``/``OTEL_PYTHON_`` prefix dropped and lower-cased, so
``--autotrace_patterns=myapp`` sets ``OTEL_PYTHON_AUTOTRACE_PATTERNS``. The
names come from ``autotrace.config.OPTIONS``.
"""

from ..config import OPTIONS

globals().update({option.env: option.env for option in OPTIONS if option.env_var})
OTEL_PYTHON_AUTOTRACE_PATTERNS = "OTEL_PYTHON_AUTOTRACE_PATTERNS"  # the one others import
