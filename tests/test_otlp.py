"""``--exporter otlp`` with the real OTLP/HTTP exporter and no collector to talk to.

What a real collector receives is checked in ``test_collector.py`` (rotel).
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .clihelp import AUTOTRACE, clean_env, run, write

pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")

APP = '''
import sys

def helper(x):
    if x == 3:
        raise ValueError("three is bad")
    return x * 2

def main(n):
    total = 0
    for i in range(n):
        try:
            total += helper(i)
        except ValueError:
            pass
    return total

print("result", main(int(sys.argv[1])))
'''

@pytest.fixture
def refused_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A local port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("where", ["refused", "black_hole"])
def test_an_unreachable_collector_costs_one_warning_and_at_most_the_timeout(
        tmp_path: Path, where: str, request: pytest.FixtureRequest) -> None:
    port = request.getfixturevalue("refused_port" if where == "refused" else "black_hole")
    write(tmp_path, "app.py", APP)
    timeout = 2
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
                    OTEL_EXPORTER_OTLP_TIMEOUT=str(timeout))
    started = time.monotonic()
    native = run([sys.executable, "app.py", "5000"], tmp_path, env=env)
    native_time = time.monotonic() - started
    started = time.monotonic()
    out = run([*AUTOTRACE, "-p", "app", "--exporter", "otlp", sys.executable, "app.py", "5000"],
              tmp_path, env=env)
    traced_time = time.monotonic() - started
    assert out.returncode == native.returncode == 0
    assert out.stdout == native.stdout == "result 24994994\n"
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"autotrace: could not export spans to http://127.0.0.1:{port}")
    # Bounded by the export timeout; the slack is for a slow machine, the point
    # is that ten batches of retries (or the SDK's 30 s) are not waited for.
    assert traced_time - native_time < timeout + 12


@pytest.fixture
def resetting_port() -> Iterator[tuple[int, list[float]]]:
    """A local port that accepts each connection and resets it at once; the accept times."""
    accepted: list[float] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            accepted.append(time.monotonic())
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1]), accepted
    finally:
        stop.set()
        thread.join()
        server.close()


def test_a_failing_exit_flush_stops_retrying_and_reports_the_whole_cause(
        tmp_path: Path, resetting_port: tuple[int, list[float]]) -> None:
    """issue 13.11: the exporter backs off and retries (1 + 2 + 4 s) inside one export();
    once an attempt of the exit flush has failed, autotrace stops it. Counted in
    connection attempts, not seconds: the retries never reach the collector."""
    port, accepted = resetting_port
    write(tmp_path, "app.py", APP)
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}")
    out = run([*AUTOTRACE, "-p", "app", "--exporter", "otlp", sys.executable, "app.py", "50"],
              tmp_path, env=env)
    assert out.returncode == 0 and out.stdout == "result 2444\n"
    # one attempt, which the HTTP client repeats once at once on a connection error
    assert 1 <= len(accepted) <= 2, accepted
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    line = lines[0]
    assert line.startswith(f"autotrace: could not export spans to http://127.0.0.1:{port}")
    assert "retrying in" not in line and "...)" not in line
    assert "Is the collector running?" in line
    cause = line.split(" (", 1)[1].rsplit("); spans are dropped", 1)[0]
    assert cause.count("(") == cause.count(")"), cause  # not cut


def test_an_endpoint_that_is_not_a_url_is_a_bad_setting(tmp_path: Path) -> None:
    write(tmp_path, "app.py", APP)
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT="notaurl")
    out = run([*AUTOTRACE, "-p", "app", "--exporter", "otlp", sys.executable, "app.py", "5"],
              tmp_path, env=env)
    assert out.returncode == 2 and out.stdout == ""
    assert "OTEL_EXPORTER_OTLP_ENDPOINT='notaurl' is not a URL" in out.stderr
    assert "http://localhost:4318" in out.stderr
    assert "collector running" not in out.stderr


def test_shutdown_interrupts_an_export_that_is_retrying(
        resetting_port: tuple[int, list[float]]) -> None:
    """A long-running program (a server) stops while a periodic export backs off after a
    failed attempt: shutdown stops the retries instead of waiting them out (issue 13.11)."""
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    import io

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from autotrace.zerocode.exporters import BoundedShutdownProcessor, GuardedExporter

    port, accepted = resetting_port
    stream = io.StringIO()
    guard = GuardedExporter(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces",
                                             timeout=10), "the collector", stream)
    processor = BoundedShutdownProcessor(
        BatchSpanProcessor(guard, schedule_delay_millis=20), guard, timeout=10)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    with provider.get_tracer("test").start_as_current_span("request"):
        pass
    for _ in range(500):  # the periodic export's first attempt
        if accepted:
            break
        time.sleep(0.01)
    assert accepted
    time.sleep(0.3)  # the exporter logs the failure and starts its 1 s backoff
    started = time.monotonic()
    provider.shutdown()
    print(f"shutdown took {time.monotonic() - started:.2f} s")  # shown with -s
    # the first attempt and its immediate reconnect; no retry after the backoff
    assert len(accepted) <= 2, accepted
    assert stream.getvalue().count("could not export spans to the collector") == 1
