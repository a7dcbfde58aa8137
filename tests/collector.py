"""A real OpenTelemetry collector for the tests: ``rotel`` (Rust, from the package index).

``rotel-agent`` (shipped inside the ``rotel`` wheel, pinned in the test extra)
listens for OTLP/HTTP and OTLP/gRPC on 127.0.0.1 and, with
``--debug-log traces --debug-log-verbosity detailed``, prints every span it
receives on stdout. ``Collector`` starts it on free ports, waits (bounded)
until both ports accept connections, reads its stdout on a thread and parses
the spans back, and stops it with SIGTERM. Nothing here was written to agree
with autotrace's exporter: the spans are what a real collector decoded.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

START_LIMIT = 20.0  # seconds; it starts in well under one
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FIELD = re.compile(r"^ {4}(?P<key>[A-Za-z][A-Za-z ]*?)\s*: ?(?P<value>.*)$")
_ATTRIBUTE = re.compile(r"^ {5}-> (?P<key>[^:]+): (?P<value>.*)$")
_TYPED = re.compile(r"^(?P<type>\w+)\((?P<value>.*)\)$", re.DOTALL)


def rotel_agent() -> str | None:
    """The ``rotel-agent`` binary of the installed ``rotel`` wheel, or None."""
    try:
        import rotel  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    path = Path(rotel.__file__).parent / "rotel-agent"
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


def require_rotel() -> str:
    path = rotel_agent()
    if path is None:
        pytest.skip(f"rotel is not installed for Python {sys.version_info[0]}."
                    f"{sys.version_info[1]} on this platform (wheels exist for CPython "
                    "3.10-3.13 on glibc >= 2.34): pip install -e '.[test]'")
    return path


@dataclass
class CollectedSpan:
    name: str = ""
    trace_id: str = ""
    span_id: str = ""
    parent_id: str = ""
    kind: str = ""
    status_code: str = ""
    status_message: str = ""
    scope: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)


def _typed(raw: str) -> Any:
    match = _TYPED.match(raw.strip())
    if not match:
        return raw
    kind, value = match["type"], match["value"]
    if kind == "Int":
        return int(value)
    if kind == "Double":
        return float(value)
    if kind == "Bool":
        return value == "true"
    return value


def parse_spans(text: str) -> list[CollectedSpan]:
    """The spans in rotel's detailed debug output."""
    spans: list[CollectedSpan] = []
    resource: dict[str, Any] = {}
    scope = ""
    section = ""
    target: dict[str, Any] | None = None
    last_key: str | None = None
    span: CollectedSpan | None = None
    for line in _ANSI.sub("", text).splitlines():
        if line.startswith("ResourceSpans #"):
            resource, section, target, span = {}, "resource", None, None
        elif line.startswith("Resource attributes:"):
            target, last_key = resource, None
        elif line.startswith("ScopeSpans #"):
            target, span = None, None
        elif line.startswith("InstrumentationScope "):
            scope = line.split()[1] if len(line.split()) > 1 else ""
        elif line.startswith("Span #"):
            span = CollectedSpan(scope=scope, resource=resource)
            spans.append(span)
            section, target = "span", None
        elif span is not None and line.startswith("Attributes:"):
            target, last_key, section = span.attributes, None, "attributes"
        elif span is not None and line.startswith(("Events:", "Links:")):
            target, last_key, section = None, None, "events"
        elif span is not None and section == "events" and "-> Name: " in line:
            span.events.append(line.split("-> Name: ", 1)[1].strip())
        elif (match := _ATTRIBUTE.match(line)) and target is not None:
            last_key = match["key"]
            target[last_key] = match["value"]
        elif span is not None and section == "span" and (match := _FIELD.match(line)):
            key, value = match["key"], match["value"].strip()
            attribute = {"Trace ID": "trace_id", "Parent ID": "parent_id", "ID": "span_id",
                         "Name": "name", "Kind": "kind", "Status code": "status_code",
                         "Status message": "status_message"}.get(key)
            if attribute:
                setattr(span, attribute, value)
        elif target is not None and last_key is not None and not line.startswith(
                ("Start time:", "End time:")):
            target[last_key] += "\n" + line  # a value on several lines (a stack trace)
    for span in spans:
        span.attributes = {k: _typed(v) for k, v in span.attributes.items()}
        span.resource = {k: _typed(v) for k, v in span.resource.items()}
    return spans


def _agent_env() -> dict[str, str]:
    """rotel-agent links to ``libpythonX.Y.so`` (for its Python processors): let the
    loader find this interpreter's, wherever it is installed (pyenv, venvs)."""
    env = {**os.environ, "NO_COLOR": "1"}
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and os.path.isdir(libdir):
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [libdir, *filter(None, [env.get("LD_LIBRARY_PATH")])])
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Collector:
    """A running ``rotel-agent``; ``spans()`` are the spans it has printed so far."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        while self.grpc_port == self.http_port:
            self.grpc_port = free_port()
        self.http_endpoint = f"http://127.0.0.1:{self.http_port}"
        self.grpc_endpoint = f"http://127.0.0.1:{self.grpc_port}"
        self._chunks: list[str] = []
        self._lock = threading.Lock()
        self.log = workdir / "rotel.log"
        started = time.monotonic()
        self.process = subprocess.Popen(
            [binary, "start", "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
             "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}", "--exporter", "blackhole",
             "--debug-log", "traces", "--debug-log", "metrics",
             "--debug-log-verbosity", "detailed"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, errors="replace", cwd=workdir, env=_agent_env())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = started + START_LIMIT
        while not (_accepts(self.http_port) and _accepts(self.grpc_port)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                if self.process.returncode == 127 and "libpython" in self.output():
                    pytest.skip("rotel-agent links to the interpreter's shared libpython, "
                                "which this Python does not provide (built without "
                                f"--enable-shared): {self.output().strip()}")
                raise RuntimeError(f"rotel-agent did not start within {START_LIMIT:g} s "
                                   f"(exit status {self.process.returncode}):\n{self.output()}")
            time.sleep(0.02)
        self.start_seconds = time.monotonic() - started

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self._chunks.append(line)

    def output(self) -> str:
        with self._lock:
            return "".join(self._chunks)

    def spans(self) -> list[CollectedSpan]:
        return parse_spans(self.output())

    def names(self) -> list[str]:
        return [span.name for span in self.spans()]

    def wait_for(self, count: int, limit: float = 60.0) -> list[CollectedSpan]:
        """The spans once at least ``count`` arrived (``limit`` bounds a hung run)."""
        deadline = time.monotonic() + limit
        while True:
            spans = self.spans()
            if len(spans) >= count or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)

    def wait_for_names(self, names: set[str], limit: float = 60.0) -> list[CollectedSpan]:
        """The spans once spans with all ``names`` arrived (``limit`` bounds a hung run)."""
        deadline = time.monotonic() + limit
        while True:
            spans = self.spans()
            if names <= {span.name for span in spans} or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._reader.join(timeout=5)
        self.log.write_text(self.output())


@contextmanager
def running_collector(workdir: Path) -> Iterator[Collector]:
    collector = Collector(require_rotel(), workdir)
    try:
        yield collector
    finally:
        collector.stop()


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    """A real collector on free local ports, stopped after the test."""
    workdir = tmp_path / "rotel"
    workdir.mkdir()
    with running_collector(workdir) as running:
        yield running
