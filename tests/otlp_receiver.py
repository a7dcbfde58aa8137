"""A real OTLP/HTTP receiver on 127.0.0.1 for integration tests.

It decodes each ``POST /v1/traces`` body as an ``ExportTraceServiceRequest``
(opentelemetry-proto) and keeps the spans as plain dicts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

trace_service_pb2 = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2")


@dataclass
class ReceivedSpan:
    name: str
    span_id: str
    parent_id: str
    trace_id: str
    kind: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    scope: str
    resource: dict[str, Any] = field(default_factory=dict)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(v) for v in any_value.array_value.values)
    return getattr(any_value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


class Receiver:
    """Collects spans; ``wait_for`` polls until a condition holds (or gives up)."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._add(request, self.path)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.paths: list[str] = []

    def _add(self, request: Any, path: str) -> None:
        found = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(ReceivedSpan(
                        name=span.name, span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(), trace_id=span.trace_id.hex(),
                        kind=span.kind, attributes=_attributes(span.attributes),
                        status_code=span.status.code, status_message=span.status.message,
                        scope=scope_spans.scope.name, resource=resource))
        with self._lock:
            self.requests += 1
            self.paths.append(path)
            self.spans.extend(found)

    def names(self) -> list[str]:
        with self._lock:
            return [s.name for s in self.spans]

    def span(self, name: str) -> ReceivedSpan:
        with self._lock:
            found = [s for s in self.spans if s.name == name]
        assert len(found) == 1, f"expected one span {name!r}, got {self.names()}"
        return found[0]

    def wait_for(self, names: set[str], limit: float = 60.0) -> None:
        """Wait until spans with all ``names`` arrived (a bound for a hung run, not a timing)."""
        deadline = time.monotonic() + limit
        while not names <= set(self.names()) and time.monotonic() < deadline:
            time.sleep(0.05)


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
