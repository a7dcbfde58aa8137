"""Which span exporters the environment asks for (``OTEL_TRACES_EXPORTER``).

Read without importing the SDK, so that the command's checks, the trace file, the
metric exporters and the lazy provider share one reading at no start-up cost; the
exporters themselves are built in ``exporters``.
"""

from __future__ import annotations

from collections.abc import Mapping

ENV_EXPORTER = "OTEL_TRACES_EXPORTER"
KNOWN_EXPORTERS = ("console", "otlp", "trace-file", "none")


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The exporters asked for; empty means the default call tree."""
    raw = environ.get(ENV_EXPORTER, "")
    return [name.strip().lower() for name in raw.split(",") if name.strip()]
