"""examples/flask_app under ``opentelemetry-instrument``: Flask, requests and autotrace in one tree.

Everything is real: the example runs in its own process on a free port of
127.0.0.1, its upstream is a second local HTTP server, and the spans arrive
over OTLP/HTTP at a real collector (``rotel``, ``tests/collector.py``).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .clihelp import AUTOTRACE, clean_env, ctrl_c_works
from .collector import CollectedSpan, running_collector

for _module in ("flask", "requests", "opentelemetry.distro",
                "opentelemetry.instrumentation.flask", "opentelemetry.instrumentation.requests",
                "opentelemetry.exporter.otlp.proto.http.trace_exporter"):
    pytest.importorskip(_module)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flask_app"
OTEL_INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"
SERVER, CLIENT = "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT"


@pytest.fixture
def upstream() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello from upstream"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/data"
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, limit: float = 60.0) -> bytes:
    """GET ``url``, retrying while the server starts (a bound for a hung start, not a timing)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return bytes(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def only(spans: list[CollectedSpan], name: str, kind: str | None = None) -> CollectedSpan:
    found = [s for s in spans if s.name == name and (kind is None or s.kind == kind)]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


@pytest.mark.skipif(not OTEL_INSTRUMENT.exists(), reason="opentelemetry-instrument not installed")
@pytest.mark.parametrize("runner", ["opentelemetry-instrument", "autotrace"])
def test_one_request_makes_one_tree(upstream: str, backend: str, tmp_path: Path,
                                    runner: str) -> None:
    """Both ways the example's docstring gives: the same one trace."""
    port = free_port()
    with running_collector(tmp_path) as collector:
        env = clean_env(
            PORT=str(port), UPSTREAM_URL=upstream,
            OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_endpoint, OTEL_METRICS_EXPORTER="none",
            OTEL_LOGS_EXPORTER="none", OTEL_BSP_SCHEDULE_DELAY="50",
            OTEL_SERVICE_NAME="flask-example", OTEL_PYTHON_AUTOTRACE_BACKEND=backend)
        command = ([str(OTEL_INSTRUMENT), "--autotrace_patterns", "app"]
                   if runner == "opentelemetry-instrument" else
                   [*AUTOTRACE, "-p", "app"])
        server = subprocess.Popen(
            [*command, sys.executable, "app.py"],
            cwd=EXAMPLE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=ctrl_c_works)
        try:
            reply = json.loads(get(f"http://127.0.0.1:{port}/fetch"))
            spans = collector.wait_for_names({"GET /fetch", "fetch", "fetch_upstream",
                                              "summarize", "GET"})
        finally:
            server.send_signal(signal.SIGINT)
            try:
                _, stderr = server.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                _, stderr = server.communicate()
    assert reply == {"status": 200, "length": 19,
                     "summary": "upstream answered 200 with 19 bytes"}, stderr
    root = only(spans, "GET /fetch", SERVER)
    client = only(spans, "GET", CLIENT)
    fetch_upstream = only(spans, "fetch_upstream")
    summarize = only(spans, "summarize")

    # The view has its own span on both backends (the script is compiled so that each
    # selected def is wrapped before @app.route registers it); the app's functions are
    # under it.
    view = only(spans, "fetch")
    assert view.parent_id == root.span_id
    for span in (fetch_upstream, summarize):
        assert span.parent_id == view.span_id
    assert client.parent_id == fetch_upstream.span_id
    assert len({s.trace_id for s in spans}) == 1
    assert root.parent_id == ""

    assert root.attributes["http.route"] == "/fetch"
    assert upstream in (client.attributes.get("url.full"), client.attributes.get("http.url"))
    assert fetch_upstream.attributes["code.function.parameters.url.value"] == upstream
    assert fetch_upstream.attributes["code.function.return.value"] == \
        "{'status': 200, 'length': 19}"
    assert fetch_upstream.attributes["code.function.name"] == "app.fetch_upstream"
    assert summarize.attributes["code.function.return.value"] == \
        "upstream answered 200 with 19 bytes"
    assert fetch_upstream.scope == "autotrace"
    assert root.resource["service.name"] == "flask-example"
