"""End to end against a collector nobody here wrote: ``rotel`` (``tests/collector.py``).

The ``autotrace`` command runs a real program with ``--exporter otlp``; the
spans are read back from what the collector printed: OTLP/HTTP with and
without gzip, OTLP/gRPC, and a collector stopped in the middle of a run.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from .clihelp import AUTOTRACE, clean_env, run, write
from .collector import CollectedSpan, Collector, collector

pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")

__all__ = ["collector"]  # the fixture

APP = '''
import sys

class Cart:
    def __init__(self, owner):
        self.owner = owner
        self.items = []

    def add(self, sku, qty=1):
        if qty <= 0:
            raise ValueError(f"bad quantity {qty}")
        self.items.append((sku, qty))
        return len(self.items)

def checkout(owner, skus):
    cart = Cart(owner)
    for sku in skus:
        cart.add(sku)
    try:
        cart.add("broken", qty=0)
    except ValueError:
        pass
    return len(cart.items)

print("items", checkout(sys.argv[1], ["apple", "pear"]))
'''


def by_name(spans: list[CollectedSpan], name: str) -> list[CollectedSpan]:
    return [span for span in spans if span.name == name]


def check_checkout_spans(spans: list[CollectedSpan], tmp_path: Path) -> None:
    assert sorted(span.name for span in spans) == ["Cart.__init__", "Cart.add", "Cart.add",
                                                   "Cart.add", "checkout"]
    (root,) = by_name(spans, "checkout")
    assert root.parent_id == ""
    assert root.kind == "SPAN_KIND_INTERNAL"
    assert root.scope == "autotrace"
    assert root.resource["service.name"] == "shop"
    assert {span.trace_id for span in spans} == {root.trace_id}
    assert {span.parent_id for span in spans if span is not root} == {root.span_id}
    assert root.attributes["code.function.name"] == "app.checkout"
    assert root.attributes["code.file.path"] == str(tmp_path / "app.py")
    assert root.attributes["code.line.number"] == 15
    assert root.attributes["code.function.parameters.owner.value"] == "ann"
    assert root.attributes["code.function.parameters.skus.value"] == "['apple', 'pear']"
    assert root.attributes["code.function.return.value"] == 2
    adds = by_name(spans, "Cart.add")
    assert [a.attributes["code.function.parameters.sku.value"] for a in adds] == [
        "apple", "pear", "broken"]
    assert all(a.attributes["code.function.name"] == "app.Cart.add" for a in adds)
    assert [a.attributes.get("code.function.return.value") for a in adds] == [1, 2, None]
    failed = adds[2]
    assert failed.attributes["code.function.parameters.qty.value"] == 0
    assert failed.status_code == "STATUS_CODE_ERROR"
    assert failed.status_message == "ValueError: bad quantity 0"
    assert failed.attributes["error.type"] == "ValueError"
    assert failed.events == ["exception"]
    assert [a.status_code for a in adds[:2]] == ["STATUS_CODE_UNSET"] * 2


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_spans_reach_a_real_collector_over_otlp_http(
        tmp_path: Path, backend: str, collector: Collector, compression: str) -> None:
    write(tmp_path, "app.py", APP)
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_endpoint,
                    OTEL_EXPORTER_OTLP_COMPRESSION=compression, OTEL_SERVICE_NAME="shop")
    out = run([*AUTOTRACE, "-p", "app", "--backend", backend, "--exporter", "otlp",
               sys.executable, "app.py", "ann"], tmp_path, env=env)
    assert (out.returncode, out.stdout, out.stderr) == (0, "items 2\n", "")
    check_checkout_spans(collector.wait_for(5), tmp_path)


def test_spans_reach_a_real_collector_over_otlp_grpc(tmp_path: Path,
                                                      collector: Collector) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
                        reason="the gRPC exporter is not installed")
    write(tmp_path, "app.py", APP)
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=collector.grpc_endpoint,
                    OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_EXPORTER_OTLP_INSECURE="true",
                    OTEL_SERVICE_NAME="shop")
    out = run([*AUTOTRACE, "-p", "app", "--exporter", "otlp", sys.executable, "app.py", "ann"],
              tmp_path, env=env)
    assert (out.returncode, out.stdout, out.stderr) == (0, "items 2\n", "")
    check_checkout_spans(collector.wait_for(5), tmp_path)


def test_the_collector_starts_fast_and_shows_what_it_received(collector: Collector) -> None:
    assert collector.start_seconds < 15
    assert collector.process.poll() is None
    assert collector.spans() == []


STOPPING_APP = '''
import os
import sys
import time

def work(i):
    return i * 2

def phase(name, n):
    return sum(work(i) for i in range(n))

print("first", phase("first", 3), flush=True)
deadline = time.monotonic() + 60
while not os.path.exists("go") and time.monotonic() < deadline:
    time.sleep(0.02)
print("second", phase("second", 2000), flush=True)
'''


def test_a_collector_stopped_mid_run_costs_one_warning_and_a_bounded_exit(
        tmp_path: Path, collector: Collector) -> None:
    import subprocess

    write(tmp_path, "app.py", STOPPING_APP)
    timeout = 2
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_endpoint,
                    OTEL_EXPORTER_OTLP_TIMEOUT=str(timeout), OTEL_BSP_SCHEDULE_DELAY="50")
    process = subprocess.Popen(
        [*AUTOTRACE, "-p", "app", "--exporter", "otlp", sys.executable, "app.py"],
        cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        spans = collector.wait_for(4)
        assert sorted(s.name for s in spans) == ["phase", "work", "work", "work"]
        collector.stop()
        started = time.monotonic()
        (tmp_path / "go").touch()
        stdout, stderr = process.communicate(timeout=120)
        delay = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert stdout == "first 6\nsecond 3998000\n"
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"autotrace: could not export spans to "
                               f"{collector.http_endpoint}/v1/traces")
    # 2,000 traced calls take well under a second; the rest is the exit flush, bounded
    # by the export timeout (slack for a loaded machine).
    assert delay < timeout + 8, f"exit took {delay:.1f} s"


METRICS_APP = """
def leaf(i):
    if i == 3:
        raise KeyError(i)
    return i

def run(n):
    total = 0
    for i in range(n):
        try:
            total += leaf(i)
        except KeyError:
            pass
    return total

print(run(1000))
"""

_HISTOGRAM_POINT = re.compile(
    r"HistogramDataPoints #\d+\s*\nData point attributes:\n(?P<attrs>(?: {5}-> .*\n)+)"
    r"StartTimestamp: \d+\s*\nTimestamp: \d+\s*\nCount: (?P<count>\d+)")


def histogram_counts(output: str) -> dict[tuple[str, ...], int]:
    """{(attribute: value, ...): count} of the last histogram points rotel printed."""
    found: dict[tuple[str, ...], int] = {}
    for match in _HISTOGRAM_POINT.finditer(output):
        attrs = tuple(sorted(line.strip()[3:] for line in match["attrs"].splitlines()))
        found[attrs] = int(match["count"])
    return found


def test_metrics_reach_a_real_collector(tmp_path: Path, collector: Collector) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http.metric_exporter")
    write(tmp_path, "app.py", METRICS_APP)
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_endpoint)
    out = run([*AUTOTRACE, "-p", "app", "--metrics", "--min-duration", "1s",
               "--keep-handled-errors", "--exporter", "otlp", sys.executable, "app.py"],
              tmp_path, env=env)
    assert (out.returncode, out.stdout, out.stderr) == (0, "499497\n", "")
    spans = collector.wait_for(2)  # the failed call and its caller (keep_handled_errors)
    assert sorted(s.name for s in spans) == ["leaf", "run"]
    deadline = time.monotonic() + 60
    expected = {
        ("code.function.name: Str(app.leaf)",): 999,
        ("code.function.name: Str(app.leaf)", "error.type: Str(KeyError)"): 1,
        ("code.function.name: Str(app.run)",): 1,
    }
    while histogram_counts(collector.output()) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert histogram_counts(collector.output()) == expected
    assert "InstrumentationScope autotrace " in collector.output()
    assert "-> Name: autotrace.function.duration" in collector.output()
    assert "-> Unit: s" in collector.output()
