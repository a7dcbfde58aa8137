"""suppress_hot: a function that has made ``hot_calls`` short spans makes no more, its
calls still counted (metrics; the enclosing span's attributes); failures still spans."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import autotrace

from .conftest import Traced

SOURCE = """
import time

def maybe(i):
    if i < 0:
        raise ValueError(i)
    return i

def loop(n, fail_at=None):
    total = 0
    for i in range(n):
        try:
            total += maybe(-1 if i == fail_at else i)
        except ValueError:
            pass
    return total

def slow(i):
    time.sleep(0.002)
    return i

def slow_loop(n):
    return [slow(i) for i in range(n)]
"""

FUNCTIONS = "autotrace.suppressed_calls.function"
COUNTS = "autotrace.suppressed_calls.count"


@pytest.mark.parametrize("min_duration", [None, "1ns"])
def test_a_hot_function_stops_making_spans_but_is_counted(
        traced: Traced, min_duration: Any) -> None:
    reader = InMemoryMetricReader()
    m = traced.load("h", SOURCE, suppress_hot=True, hot_calls=10, hot_duration="1s",
                    metrics=True, meter_provider=MeterProvider(metric_readers=[reader]),
                    min_duration=min_duration)
    m.loop(25, fail_at=20)
    names = traced.names()
    assert names.count("maybe") == 11  # ten before it was found hot, and the failure
    failed = [s for s in traced.spans() if s.name == "maybe" and not s.status.is_ok]
    assert len(failed) == 1
    assert dict(failed[0].attributes or {})["error.type"] == "ValueError"
    loop = traced.attrs("loop")
    assert loop[FUNCTIONS] == (f"{m.__name__}.maybe",)
    assert loop[COUNTS] == (14,)
    data = reader.get_metrics_data()
    assert data is not None
    counts = {(dict(p.attributes)["code.function.name"], dict(p.attributes).get("error.type")):
              p.count for rm in data.resource_metrics for sm in rm.scope_metrics
              for metric in sm.metrics if metric.name == "autotrace.function.duration"
              for p in metric.data.data_points}
    assert counts[(f"{m.__name__}.maybe", None)] == 24
    assert counts[(f"{m.__name__}.maybe", "ValueError")] == 1


def test_a_function_over_the_hot_duration_keeps_its_spans(traced: Traced) -> None:
    m = traced.load("h", SOURCE, suppress_hot=True, hot_calls=3, hot_duration="1us")
    m.slow_loop(8)
    assert traced.names().count("slow") == 8
    assert FUNCTIONS not in traced.attrs("slow_loop")


def test_without_suppress_hot_every_call_is_a_span(traced: Traced) -> None:
    m = traced.load("h", SOURCE, hot_calls=3, hot_duration="1s")
    m.loop(12)
    assert traced.names().count("maybe") == 12


@pytest.mark.parametrize(("options", "fragment"), [
    ({"hot_calls": 0}, "hot_calls=0 is too small"),
    ({"hot_calls": "many"}, "hot_calls='many' must be an integer"),
    ({"hot_duration": "fast"}, "hot_duration='fast' is not a duration"),
    ({"hot_duration": -1}, "hot_duration=-1 must be a positive duration"),
    ({"suppress_hot": "yes"}, "suppress_hot='yes' must be True or False"),
])
def test_bad_hot_settings_fail_at_install(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        autotrace.install(["nothing_here"], **options)
    assert fragment in str(info.value)


def test_the_span_counter_names_the_hottest_functions_past_its_limit() -> None:
    import io

    from opentelemetry.sdk.trace import TracerProvider

    from autotrace.zerocode.spancount import SpanCounter

    stream = io.StringIO()
    counter = SpanCounter(stream, limit=20)
    provider = TracerProvider()
    provider.add_span_processor(counter)
    autotrace_tracer = provider.get_tracer("autotrace")
    other = provider.get_tracer("someone.else")
    for i in range(30):
        name = f"app.f{i % 7 if i < 21 else 0}"
        autotrace_tracer.start_span("f", attributes={"code.function.name": name}).end()
        other.start_span("g").end()
    assert counter.total == 30
    counter.report()
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert line.startswith("autotrace: this run made 30 spans; the most came from "
                           "app.f0 (12), app.f1 (3), app.f2 (3), app.f3 (3), app.f4 (3). ")
    assert "--min-duration" in line and "--suppress-hot" in line
    assert "--exclude app.f0" in line
    quiet = io.StringIO()
    SpanCounter(quiet, limit=30).report()
    assert quiet.getvalue() == ""


HOT_APP = """
def tiny(i):
    return i

for i in range(100_100):
    tiny(i)
"""


def test_a_run_with_more_than_100000_spans_says_how_to_cut_them(tmp_path: Any) -> None:
    import sys

    from .clihelp import AUTOTRACE, clean_env, run, write

    write(tmp_path, "app.py", HOT_APP)
    out = run([*AUTOTRACE, "-p", "app", "--exporter", "trace-file", "--no-capture-args",
               "--no-capture-return", sys.executable, "app.py"], tmp_path, env=clean_env())
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if "spans; the most" in line]
    assert lines == ["autotrace: this run made 100,100 spans; the most came from "
                     "app.tiny (100,100). To cut them: --min-duration 1ms (keep only slower "
                     "calls), --suppress-hot (stop spans of small hot functions), or "
                     "--exclude app.tiny"]
