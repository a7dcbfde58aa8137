"""``--exporter otlp`` with the real OTLP/HTTP exporter and no collector to talk to.

What a real collector receives is checked in ``test_collector.py`` (rotel).
"""

from __future__ import annotations

import socket
import sys
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
