"""The meter provider the ``autotrace`` command gives autotrace when ``--metrics`` is on.

``OTEL_METRICS_EXPORTER`` chooses where metrics go: ``console`` (the SDK's JSON,
on stderr so the program's stdout stays its own), ``otlp`` (the same collector
as spans: the standard ``OTEL_EXPORTER_OTLP_*`` variables, HTTP ``/v1/metrics``
or gRPC), ``none``. Unset, metrics follow the span exporter: ``otlp`` when
spans go there, else ``console``. ``OTEL_METRIC_EXPORT_INTERVAL`` (ms) is read
by the SDK's periodic reader. The provider is autotrace's own (never made
global) and is shut down at exit, which hands over the last calls.
"""

from __future__ import annotations

import atexit
from collections.abc import Mapping
from typing import Any, TextIO

from ..config import OPTIONS_BY_NAME, TRUE_WORDS
from .exporter_env import exporter_names

ENV_METRICS_EXPORTER = "OTEL_METRICS_EXPORTER"
KNOWN_METRIC_EXPORTERS = ("console", "otlp", "none")


def metrics_on(environ: Mapping[str, str]) -> bool:
    return environ.get(OPTIONS_BY_NAME["metrics"].env, "").strip().lower() in TRUE_WORDS


def metric_exporter_names(environ: Mapping[str, str]) -> list[str]:
    raw = environ.get(ENV_METRICS_EXPORTER, "")
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    if names:
        return names
    return ["otlp"] if "otlp" in exporter_names(environ) else ["console"]


def check_metric_exporters(environ: Mapping[str, str]) -> str | None:
    """Why ``OTEL_METRICS_EXPORTER`` cannot be used, or None."""
    if not metrics_on(environ):
        return None
    for name in metric_exporter_names(environ):
        if name not in KNOWN_METRIC_EXPORTERS:
            return (f"{ENV_METRICS_EXPORTER}={name!r} is not a metrics exporter autotrace "
                    "knows; use " + ", ".join(KNOWN_METRIC_EXPORTERS))
    return None


def default_meter_provider(environ: Mapping[str, str], stream: TextIO) -> Any:
    """autotrace's meter provider for this process, or None (metrics off, or ``none``)."""
    if not metrics_on(environ):
        return None
    names = [name for name in metric_exporter_names(environ) if name != "none"]
    if not names:
        return None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricExporter,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource

    readers = []
    for name in names:
        exporter: MetricExporter
        if name == "console":
            exporter = ConsoleMetricExporter(out=stream)
        else:
            exporter = _otlp(environ)
        readers.append(PeriodicExportingMetricReader(exporter))
    provider = MeterProvider(metric_readers=readers, resource=Resource.create(),
                             shutdown_on_exit=False)
    atexit.register(provider.shutdown)
    return provider


def _otlp(environ: Mapping[str, str]) -> Any:
    protocol = (environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
                or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip().lower()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # type: ignore[import-not-found, unused-ignore]
                OTLPMetricExporter as GrpcExporter,
            )
        except ImportError:
            pass
        else:
            return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter()
