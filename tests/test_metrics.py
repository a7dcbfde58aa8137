"""Metrics: a histogram of every traced call (span or not), exact, from the real SDK's
``InMemoryMetricReader``; both backends, threads and fork; the per-function aggregates
the profile is built on."""

from __future__ import annotations

import functools
import os
import sys
import threading
from bisect import bisect_left
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

from autotrace.record import metrics

from .clihelp import clean_env, run, write
from .conftest import Traced

SOURCE = """
import time

def leaf(x):
    return x + 1

def failing(x):
    raise ValueError(x)

def loop(n):
    return sum(leaf(i) for i in range(n))

def slow():
    time.sleep(0.005)
    return leaf(1)

def nested(depth):
    if depth:
        return nested(depth - 1)
    return 0

def sleeper(n):
    for _ in range(n):
        time.sleep(0.002)
    return n

def caller(n):
    time.sleep(0.004)
    return sleeper(n) + sleeper(n)
"""

DURATION = "autotrace.function.duration"


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(reader: InMemoryMetricReader) -> MeterProvider:
    return MeterProvider(metric_readers=[reader])


def points(reader: InMemoryMetricReader, name: str = DURATION) -> dict[tuple[Any, ...], Any]:
    """{(function, error.type or None): data point} of metric ``name``, one collection."""
    out: dict[tuple[Any, ...], Any] = {}
    data = reader.get_metrics_data()
    if data is None:
        return out
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                assert scope.scope.name == "autotrace"
                assert scope.scope.version
                for point in metric.data.data_points:
                    attrs = dict(point.attributes)
                    out[(attrs.pop("code.function.name"), attrs.pop("error.type", None))] = point
                    assert attrs == {}
    return out


def load(traced: Traced, meter_provider: MeterProvider, **options: Any) -> Any:
    options.setdefault("metrics", True)
    return traced.load("m", SOURCE, meter_provider=meter_provider, **options)


def test_every_call_dropped_by_min_duration_is_counted_exactly(
        traced: Traced, meter_provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    m = load(traced, meter_provider, min_duration="1s")
    m.loop(250)
    for i in range(3):
        with pytest.raises(ValueError):
            m.failing(i)
    assert traced.spans() != []  # the failures are kept (keep_errors)
    assert all(s.name == "failing" for s in traced.spans())
    found = points(reader)
    leaf = found[(f"{m.__name__}.leaf", None)]
    assert leaf.count == 250
    assert sum(leaf.bucket_counts) == 250
    assert list(leaf.explicit_bounds)[:3] == [0.0, 5.0, 10.0]  # the SDK's default buckets
    assert 0 < leaf.min <= leaf.max < 1
    assert found[(f"{m.__name__}.loop", None)].count == 1
    failed = found[(f"{m.__name__}.failing", "ValueError")]
    assert failed.count == 3
    assert (f"{m.__name__}.failing", None) not in found
    # Cumulative: the next collection adds only the new calls.
    m.leaf(1)
    assert points(reader)[(f"{m.__name__}.leaf", None)].count == 251


def test_calls_kept_or_dropped_are_each_counted_once(
        traced: Traced, meter_provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    """The compiled finish counts a call before it knows whether the call is kept; a kept
    one then goes on to the Python finish, which must not count it again."""
    m = load(traced, meter_provider, min_duration="2ms")
    for _ in range(3):
        m.slow()  # kept: lasts longer than min_duration
    m.loop(40)  # dropped
    assert [s.name for s in traced.spans()].count("slow") == 3
    found = points(reader)
    assert found[(f"{m.__name__}.slow", None)].count == 3
    assert found[(f"{m.__name__}.leaf", None)].count == 43  # slow() calls it too
    assert found[(f"{m.__name__}.loop", None)].count == 1


def test_the_histogram_has_the_exact_durations_in_the_providers_own_buckets(
        traced: Traced) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=[View(
        instrument_name=DURATION,
        aggregation=ExplicitBucketHistogramAggregation([0.001, 0.003, 1.0]))])
    m = load(traced, provider, min_duration="1s", profile=True)
    for _ in range(40):
        m.leaf(0)
    for _ in range(3):
        m.slow()
    found = points(reader)
    slow = found[(f"{m.__name__}.slow", None)]
    assert list(slow.explicit_bounds) == [0.001, 0.003, 1.0]
    assert list(slow.bucket_counts) == [0, 0, 3, 0]  # each lasted 5 ms or more, < 1 s
    leaf = found[(f"{m.__name__}.leaf", None)]
    assert leaf.count == 43
    # The very values the profile saw: one duration per call, in seconds.
    stats = {s.name: s for s in traced.installation._recorder.stats.by_info.values()}  # type: ignore[union-attr]
    assert leaf.sum == pytest.approx(stats[f"{m.__name__}.leaf"].total_ns / 1e9, rel=1e-9)
    assert slow.max >= 0.005


def test_calls_outside_a_parent_and_below_max_depth_are_counted(
        traced: Traced, meter_provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    m = load(traced, meter_provider, require_parent=True)
    for i in range(7):
        m.leaf(i)
    assert traced.spans() == []
    assert points(reader)[(f"{m.__name__}.leaf", None)].count == 7


def test_calls_below_max_depth_are_counted(
        traced: Traced, meter_provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    m = load(traced, meter_provider, max_depth=2)
    m.nested(9)
    assert traced.names() == ["nested", "nested"]
    hidden = [dict(s.attributes or {}).get("autotrace.depth_limited_calls")
              for s in traced.spans()]
    assert sorted(hidden, key=str) == [8, None]  # still on the deepest kept span
    assert points(reader)[(f"{m.__name__}.nested", None)].count == 10


def test_metrics_alone_make_no_spans(
        traced: Traced, meter_provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    m = load(traced, meter_provider, spans=False)
    m.loop(30)
    with pytest.raises(ValueError):
        m.failing(1)
    assert traced.spans() == []
    found = points(reader)
    assert found[(f"{m.__name__}.leaf", None)].count == 30
    assert found[(f"{m.__name__}.failing", "ValueError")].count == 1
    calls = points(reader, "autotrace.function.calls")
    assert calls[(f"{m.__name__}.leaf", None)].value == 30


def test_eager_spans_and_metrics_together(
        traced: Traced, meter_provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    m = load(traced, meter_provider)
    m.loop(4)
    assert sorted(traced.names()) == ["leaf"] * 4 + ["loop"]
    assert traced.attrs("loop")["code.function.name"] == f"{m.__name__}.loop"
    assert points(reader)[(f"{m.__name__}.leaf", None)].count == 4


def test_threads_are_counted_exactly(
        traced: Traced, meter_provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    m = load(traced, meter_provider, min_duration="1s")
    barrier = threading.Barrier(4)
    counts: list[int] = []

    def work() -> None:
        barrier.wait()
        for i in range(2000):
            m.leaf(i)
            if i % 50 == 0:
                counts.append(len(points(reader)))  # collections while calls run

    threads = [threading.Thread(target=work) for _ in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert points(reader)[(f"{m.__name__}.leaf", None)].count == 8000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_reports_only_its_own_calls(
        traced: Traced, meter_provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    m = load(traced, meter_provider, min_duration="1s", spans=False)
    m.loop(5)  # not collected before the fork
    read, write_end = os.pipe()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12: fork with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            m.loop(3)
            count = points(reader)[(f"{m.__name__}.leaf", None)].count
            os.write(write_end, str(count).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    child = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert child == "3"
    m.loop(1)
    assert points(reader)[(f"{m.__name__}.leaf", None)].count == 6


def test_own_time_adds_up(traced: Traced, meter_provider: MeterProvider) -> None:
    m = load(traced, meter_provider, metrics=False, profile=True, spans=False)
    m.caller(3)
    m.caller(2)
    stats = {s.name.rsplit(".", 1)[1]: s
             for s in traced.installation._recorder.stats.by_info.values()}  # type: ignore[union-attr]
    caller, sleeper = stats["caller"], stats["sleeper"]
    assert (caller.calls, sleeper.calls) == (2, 4)
    assert caller.own_ns + sleeper.total_ns == caller.total_ns
    assert sleeper.own_ns == sleeper.total_ns
    assert caller.own_ns < caller.total_ns
    assert caller.own_ns >= 2 * 4_000_000  # its own sleeps
    assert sleeper.total_ns >= 2 * (3 + 2) * 2_000_000
    assert caller.max_ns <= caller.total_ns


PROFILED_APP = """
import time

def step(i):
    time.sleep(0.003)
    if i == 2:
        raise KeyError(i)
    return i

def run(n):
    done = 0
    for i in range(n):
        try:
            done += step(i)
        except KeyError:
            pass
    return done

print(run(4))
"""


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_the_profile_at_exit_works_with_spans_off(tmp_path: Any, how: str) -> None:
    from .clihelp import AUTOTRACE

    write(tmp_path, "app.py", PROFILED_APP)
    if how == "flag":
        args, env = ["--profile", "--no-spans"], clean_env()
    else:
        args, env = [], clean_env(OTEL_PYTHON_AUTOTRACE_PROFILE="true",
                                  OTEL_PYTHON_AUTOTRACE_SPANS="false")
    out = run([*AUTOTRACE, "-p", "app", *args, sys.executable, "app.py"], tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "4\n"
    lines = out.stderr.splitlines()
    assert lines[0] == "autotrace profile: 2 traced functions by total time", out.stderr
    assert lines[1].split() == ["calls", "total", "own", "mean", "max", "failures", "function"]
    first, second = (line.split() for line in lines[2:4])
    assert (first[0], first[5], first[6]) == ("1", "0", "app.run")
    assert (second[0], second[5], second[6]) == ("4", "1", "app.step")
    assert len(lines) == 4  # no call tree: spans are off


def test_the_command_prints_metrics_with_the_console_exporter(tmp_path: Any) -> None:
    import json

    from .clihelp import AUTOTRACE

    write(tmp_path, "app.py", PROFILED_APP)
    env = clean_env(OTEL_METRICS_EXPORTER="console", OTEL_TRACES_EXPORTER="none")
    out = run([*AUTOTRACE, "-p", "app", "--metrics", sys.executable, "app.py"], tmp_path,
              env=env)
    assert (out.returncode, out.stdout) == (0, "4\n"), out.stderr
    start = out.stderr.index("{")
    data = json.loads(out.stderr[start:])
    metrics = {m["name"]: m for rm in data["resource_metrics"] for sm in rm["scope_metrics"]
               for m in sm["metrics"]}
    counts = {(p["attributes"]["code.function.name"], p["attributes"].get("error.type")):
              p["count"] for p in metrics["autotrace.function.duration"]["data"]["data_points"]}
    assert counts == {("app.run", None): 1, ("app.step", None): 3, ("app.step", "KeyError"): 1}


@pytest.mark.parametrize(("env", "fragment"), [
    ({"OTEL_METRICS_EXPORTER": "prometheus"}, "OTEL_METRICS_EXPORTER='prometheus'"),
    ({"OTEL_PYTHON_AUTOTRACE_HOT_CALLS": "0"}, "OTEL_PYTHON_AUTOTRACE_HOT_CALLS=0"),
])
def test_bad_metrics_settings_stop_the_command(tmp_path: Any, env: dict[str, str],
                                               fragment: str) -> None:
    from .clihelp import AUTOTRACE

    write(tmp_path, "app.py", PROFILED_APP)
    out = run([*AUTOTRACE, "-p", "app", "--metrics", sys.executable, "app.py"], tmp_path,
              env=clean_env(**env))
    assert out.returncode == 2
    assert fragment in out.stderr
    assert out.stdout == ""


def test_metrics_off_by_default_under_the_command(tmp_path: Any) -> None:
    from .clihelp import AUTOTRACE

    write(tmp_path, "app.py", PROFILED_APP)
    out = run([*AUTOTRACE, "-p", "app", sys.executable, "app.py"], tmp_path,
              env=clean_env(OTEL_METRICS_EXPORTER="console", OTEL_TRACES_EXPORTER="none"))
    assert (out.returncode, out.stdout, out.stderr) == (0, "4\n", "")


ASYNC_SOURCE = """
import asyncio
import time

async def child():
    time.sleep(0.003)        # runs
    await asyncio.sleep(0.05)  # suspended
    time.sleep(0.003)
    return 1

async def parent():
    time.sleep(0.004)
    return await child() + await child()

def gen(n):
    for i in range(n):
        time.sleep(0.002)
        yield i

def consume():
    out = []
    for item in gen(3):
        time.sleep(0.01)  # the generator is suspended meanwhile
        out.append(item)
    return out
"""


def test_own_time_of_generators_and_coroutines_is_the_time_their_body_ran(
        traced: Traced, meter_provider: MeterProvider) -> None:
    import asyncio

    m = traced.load("a", ASYNC_SOURCE, profile=True, spans=False)
    asyncio.run(m.parent())
    m.consume()
    stats = {s.name.rsplit(".", 1)[1]: s
             for s in traced.installation._recorder.stats.by_info.values()}  # type: ignore[union-attr]
    child, parent, gen, consume = (stats[n] for n in ("child", "parent", "gen", "consume"))
    assert child.total_ns >= 2 * 50_000_000  # suspended in the wall time
    assert parent.total_ns >= child.total_ns
    assert 2 * 6_000_000 <= child.own_ns < 2 * 50_000_000  # but not in its own time
    assert 4_000_000 <= parent.own_ns < 50_000_000
    assert gen.total_ns >= 20_000_000 + 6_000_000
    assert 6_000_000 <= gen.own_ns < 20_000_000
    assert consume.own_ns + gen.own_ns <= consume.total_ns
    assert consume.own_ns >= 30_000_000


def _histogram_points(reader: InMemoryMetricReader, name: str = DURATION) -> list[Any]:
    out = []
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    out.append({key: getattr(point, key) for key in (
                        "attributes", "count", "sum", "bucket_counts", "explicit_bounds",
                        "min", "max", "value") if hasattr(point, key)})
    return out


def _approx_sums(points: list[Any]) -> list[Any]:
    return [{k: pytest.approx(v, rel=1e-9, abs=1e-12) if k in ("sum", "value") else v
             for k, v in point.items()} for point in points]


@pytest.mark.parametrize("views", ["default", "buckets", "keys", "two", "sum", "drop",
                                   "exponential"])
@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
def test_the_aggregates_give_the_sdk_what_one_record_per_call_gives(
        views: str, temporality: str) -> None:
    """Calls counted by ``Aggregates`` and handed over at each collection (SDK internals)
    against the public API, one ``record()`` per duration, collection for collection."""
    from opentelemetry.sdk.metrics import Histogram
    from opentelemetry.sdk.metrics.export import AggregationTemporality
    from opentelemetry.sdk.metrics.view import (
        DropAggregation,
        ExponentialBucketHistogramAggregation,
        SumAggregation,
    )

    from autotrace.describe.function import FunctionInfo

    chosen = {
        "default": [],
        "buckets": [View(instrument_name=DURATION,
                         aggregation=ExplicitBucketHistogramAggregation([1e-6, 1e-4, 0.01]))],
        "keys": [View(instrument_name=DURATION, attribute_keys={"error.type"})],
        "two": [View(instrument_name=DURATION, name="fine",
                     aggregation=ExplicitBucketHistogramAggregation([1e-5, 3e-3, 0.02])),
                View(instrument_name=DURATION)],
        "sum": [View(instrument_name=DURATION, aggregation=SumAggregation())],
        "drop": [View(instrument_name=DURATION, aggregation=DropAggregation())],
        "exponential": [View(instrument_name=DURATION,
                             aggregation=ExponentialBucketHistogramAggregation())],
    }[views]
    kind = {"cumulative": AggregationTemporality.CUMULATIVE,
            "delta": AggregationTemporality.DELTA}[temporality]
    # durations (ns) across all the buckets, and on their very edges
    durations = [(i * 7919 % 1000003) * 33 + i for i in range(2000)]
    durations += [10_000, 10_001, 9_999, 100_000, 10_000_000, 3_000_000, 20_000_000]
    info = FunctionInfo("f", {"code.function.name": "m.f"}, [], False, False)
    attrs = {"code.function.name": "m.f"}
    failed = {**attrs, "error.type": "ValueError"}
    feeds = [(durations[:1500], None), (durations[1500:], None), ([], None),
             (durations[:7], ValueError("x"))]

    def provider() -> tuple[MeterProvider, InMemoryMetricReader]:
        reader = InMemoryMetricReader(preferred_temporality={Histogram: kind})
        return MeterProvider(metric_readers=[reader], views=chosen), reader

    names = (DURATION, "fine") if views == "two" else (DURATION,)
    public, public_reader = provider()
    histogram = public.get_meter("autotrace").create_histogram(DURATION, unit="s")
    counted, counted_reader = provider()
    aggregates = metrics.Aggregates(True, False, counted)
    expected, got = [], []
    for part, error in feeds:
        for ns in part:
            histogram.record(ns / 1e9, failed if error else attrs)
            aggregates.finished(info, ns, 0, error)
        expected.append([_histogram_points(public_reader, name) for name in names])
        got.append([_histogram_points(counted_reader, name) for name in names])
    if views == "exponential":  # replayed from the buckets: count, sum, min, max exact
        pick = ("attributes", "count", "sum", "min", "max")
        expected = [[[{k: p[k] for k in pick} for p in ps] for ps in c] for c in expected]
        got = [[[{k: p[k] for k in pick} for p in ps] for ps in c] for c in got]
    assert got == [[_approx_sums(ps) for ps in c] for c in expected]
    if views != "drop":
        assert any(any(c) for c in expected)  # the comparison compared something
    public.shutdown()
    counted.shutdown()


def test_calls_before_the_first_collection_are_all_counted_with_no_output(
        traced: Traced, capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """Issue 22: 100,000 calls (more than the old 65,536 buffer) before the first
    collection, no span kept; the histogram has every one, in the View's buckets, and
    nothing is printed or logged."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=[View(
        instrument_name=DURATION,
        aggregation=ExplicitBucketHistogramAggregation([0.001, 0.003, 1.0]))])
    m = load(traced, provider, min_duration="10s", profile=True)
    m.loop(100_000)
    for _ in range(2):
        m.slow()
    stats = {s.name: s for s in traced.installation._recorder.stats.by_info.values()}  # type: ignore[union-attr]
    assert stats[f"{m.__name__}.leaf"].thresholds == tuple(  # known from the first call
        metrics._threshold_ns(b) for b in (0.001, 0.003, 1.0))
    found = points(reader)
    leaf = found[(f"{m.__name__}.leaf", None)]
    assert leaf.count == sum(leaf.bucket_counts) == 100_002
    assert leaf.sum == pytest.approx(stats[f"{m.__name__}.leaf"].total_ns / 1e9, rel=1e-9)
    assert leaf.max == pytest.approx(stats[f"{m.__name__}.leaf"].max_ns / 1e9, rel=1e-9)
    assert list(found[(f"{m.__name__}.slow", None)].bucket_counts) == [0, 0, 2, 0]
    assert traced.spans() == []
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert [r for r in caplog.records if r.name.startswith("autotrace")] == []


@pytest.mark.parametrize("temporality", ["delta", "cumulative"])
def test_temporality(traced: Traced, temporality: str) -> None:
    from opentelemetry.sdk.metrics import Histogram
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    kind = {"cumulative": AggregationTemporality.CUMULATIVE,
            "delta": AggregationTemporality.DELTA}[temporality]
    reader = InMemoryMetricReader(preferred_temporality={Histogram: kind})
    m = load(traced, MeterProvider(metric_readers=[reader]), spans=False)
    name = f"{m.__name__}.leaf"
    m.loop(30)
    first = points(reader)[(name, None)]
    m.loop(12)
    second = points(reader)[(name, None)]
    third = points(reader).get((name, None))  # no calls since
    assert first.count == 30
    if temporality == "delta":
        assert second.count == 12
        assert second.start_time_unix_nano == first.time_unix_nano
        assert third is None
    else:
        assert second.count == 42
        assert second.start_time_unix_nano == first.start_time_unix_nano
        assert third is not None and third.count == 42
        assert third.sum == second.sum


def test_several_readers_each_get_every_call_in_their_own_buckets(traced: Traced) -> None:
    from opentelemetry.sdk.metrics import Histogram
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    plain = InMemoryMetricReader()
    fine = InMemoryMetricReader(
        preferred_temporality={Histogram: AggregationTemporality.DELTA},
        preferred_aggregation={Histogram: ExplicitBucketHistogramAggregation(
            [0.001, 0.003, 1.0])})
    m = load(traced, MeterProvider(metric_readers=[plain, fine]), min_duration="1s")
    name = f"{m.__name__}.slow"
    for _ in range(3):
        m.slow()
    assert points(plain)[(name, None)].count == 3  # one reader collects...
    m.slow()
    got = points(fine)[(name, None)]  # ...the other sees every call all the same
    assert list(got.bucket_counts) == [0, 0, 4, 0]
    assert list(got.explicit_bounds) == [0.001, 0.003, 1.0]
    m.slow()
    assert points(fine)[(name, None)].count == 1  # delta
    default = points(plain)[(name, None)]
    assert default.count == sum(default.bucket_counts) == 5  # cumulative
    assert list(default.explicit_bounds) == list(sdk_default_bounds())


def test_uninstall_leaves_every_call_made_before_it_to_the_next_collection(
        traced: Traced, meter_provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    m = load(traced, meter_provider, min_duration="1s")
    m.loop(20)
    traced.installation.uninstall()  # type: ignore[union-attr]
    m.loop(5)  # not traced any more
    assert points(reader)[(f"{m.__name__}.leaf", None)].count == 20
    assert points(reader, "autotrace.function.calls")[(f"{m.__name__}.leaf", None)].value == 20


def test_installing_again_on_the_same_provider_counts_both(
        traced: Traced, meter_provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    m = load(traced, meter_provider, min_duration="1s")
    m.loop(20)
    traced.installation.uninstall()  # type: ignore[union-attr]
    traced.installation = None
    m2 = load(traced, meter_provider, min_duration="1s")
    assert m2 is m
    import importlib

    m = importlib.reload(m)  # wrapped again by the new installation
    m.loop(3)
    name = (f"{m.__name__}.leaf", None)
    assert points(reader)[name].count == 23
    assert points(reader, "autotrace.function.calls")[name].value == 23
    traced.installation.uninstall()  # type: ignore[union-attr]


def exemplars_of(point: Any) -> list[tuple[int, int, float]]:
    return [(e.trace_id, e.span_id, e.value) for e in point.exemplars]


@pytest.mark.parametrize("exemplar_filter", ["trace_based", "always_on", "always_off", None])
def test_kept_calls_are_the_exemplars_of_their_buckets(
        traced: Traced, monkeypatch: pytest.MonkeyPatch, exemplar_filter: str | None) -> None:
    if exemplar_filter is None:
        monkeypatch.delenv("OTEL_METRICS_EXEMPLAR_FILTER", raising=False)
    else:
        monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", exemplar_filter)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=[View(
        instrument_name=DURATION,
        aggregation=ExplicitBucketHistogramAggregation([0.001, 0.003, 1.0]))])
    m = load(traced, provider, min_duration="3ms")
    m.loop(50)  # dropped: no exemplar
    m.slow()
    m.slow()  # kept (5 ms); the latest is its bucket's exemplar
    with pytest.raises(ValueError):
        m.failing(1)  # kept (an error)
    found = points(reader)
    slow_spans = [s for s in traced.spans() if s.name == "slow"]
    assert len(slow_spans) == 2
    latest = max(slow_spans, key=lambda s: s.end_time or 0)
    slow = found[(f"{m.__name__}.slow", None)]
    failing = found[(f"{m.__name__}.failing", "ValueError")]
    kept_leaves = {s.context.span_id for s in traced.spans() if s.name == "leaf"}  # slow ones
    assert {e[1] for e in exemplars_of(found[(f"{m.__name__}.leaf", None)])} <= kept_leaves
    if exemplar_filter == "always_off":
        assert exemplars_of(slow) == exemplars_of(failing) == []
        return
    ((trace_id, span_id, value),) = exemplars_of(slow)
    assert (trace_id, span_id) == (latest.context.trace_id, latest.context.span_id)
    assert 0.003 < value < 1.0  # in the bucket it is counted in
    assert slow.exemplars[0].time_unix_nano >= (latest.end_time or 0) - 10_000_000
    assert exemplars_of(failing)[0][1] == traced.span("failing").context.span_id
    m.slow()
    m.loop(5)
    found = points(reader)
    assert exemplars_of(found[(f"{m.__name__}.slow", None)])[0][1] == max(
        (s for s in traced.spans() if s.name == "slow"),
        key=lambda s: s.end_time or 0).context.span_id
    assert exemplars_of(found[(f"{m.__name__}.failing", "ValueError")]) == []  # none since


@pytest.mark.parametrize("exemplar_filter", ["trace_based", "always_on"])
def test_exemplars_of_spans_not_sampled_follow_the_filter(
        traced: Traced, monkeypatch: pytest.MonkeyPatch, exemplar_filter: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", exemplar_filter)
    reader = InMemoryMetricReader()
    m = load(traced, MeterProvider(metric_readers=[reader]),
             tracer_provider=TracerProvider(sampler=ALWAYS_OFF))
    m.leaf(1)  # an eager span, not sampled
    found = exemplars_of(points(reader)[(f"{m.__name__}.leaf", None)])
    if exemplar_filter == "trace_based":
        assert found == []
    else:
        assert len(found) == 1 and found[0][0] and found[0][1]


def test_a_provider_set_after_install_refines_the_buckets(tmp_path: Any) -> None:
    """The global provider, set after install() with a View: counted in the SDK's
    defaults until a collection shows the View's buckets; every call still counted, one
    notice through the logger, nothing else on stderr."""
    write(tmp_path, "late.py", SOURCE)
    write(tmp_path, "main.py", """
import logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
import autotrace
autotrace.install(["late"], metrics=True, spans=False)
import late
late.loop(300)
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader], views=[View(
    instrument_name="autotrace.function.duration",
    aggregation=ExplicitBucketHistogramAggregation([0.001, 0.003, 1.0]))]))
late.loop(200)
late.slow()
def counts():
    out = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == "autotrace.function.duration":
                    for p in m.data.data_points:
                        out[p.attributes["code.function.name"]] = (
                            p.count, list(p.bucket_counts), list(p.explicit_bounds))
    return out
first = counts()
print(first["late.leaf"][0], sum(first["late.leaf"][1]), first["late.leaf"][2],
      first["late.leaf"][1][-1])
late.slow()
print(counts()["late.slow"][1])
""")
    out = run([sys.executable, "main.py"], tmp_path, env=clean_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["501 501 [0.001, 0.003, 1.0] 0", "[0, 0, 2, 0]"]
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("autotrace: the meter provider's views"), (
        out.stderr)
    assert "meter_provider=" in lines[0]


def test_a_collection_inside_a_pending_call_does_not_keep_it(traced: Traced) -> None:
    """Handing durations over runs the SDK's exemplar filter, which reads the current
    span: it must not ask the pending call for one (that would keep it)."""
    reader = InMemoryMetricReader()
    m = traced.load("c", """
def work(collect):
    return collect()
""", meter_provider=MeterProvider(metric_readers=[reader]), metrics=True,
                    min_duration="1s")
    m.work(lambda: None)
    data = m.work(reader.get_metrics_data)
    assert data is not None
    assert traced.spans() == []


@functools.cache
def sdk_default_bounds() -> tuple[float, ...]:
    """The buckets the SDK gives a histogram with no view, read from its own output."""
    reader = InMemoryMetricReader()
    MeterProvider(metric_readers=[reader]).get_meter("t").create_histogram("h").record(1.0)
    data = reader.get_metrics_data()
    assert data is not None
    point = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points[0]
    return tuple(point.explicit_bounds)


@given(st.lists(st.floats(min_value=-1.0, max_value=1e12, allow_nan=False), min_size=1,
                max_size=20, unique=True).map(sorted),
       st.lists(st.integers(min_value=0, max_value=1 << 61), min_size=1, max_size=50))
def test_nanosecond_thresholds_pick_the_sdks_bucket(bounds: list[float],
                                                    durations: list[int]) -> None:
    """The in-process count finds a call's bucket in integer nanoseconds; it must be the
    bucket the SDK finds for the same duration in seconds, at every boundary."""
    for bound_set in (bounds, sdk_default_bounds()):
        thresholds = [metrics._threshold_ns(bound) for bound in bound_set]
        near = [t + delta for t in thresholds for delta in (-1, 0, 1)
                if 0 <= t + delta < metrics.LONGER_THAN_ANY_CALL]
        for ns in [*durations, *near]:
            assert bisect_left(thresholds, ns) == bisect_left(bound_set, ns / 1e9), ns


def test_a_notice_outside_an_exception_prints_no_traceback_line(
        capfd: pytest.CaptureFixture[str]) -> None:
    """The old 'durations were dropped' notice was followed by a stray ``NoneType: None``
    (``exc_info=True`` with no exception being handled)."""
    import logging

    from autotrace._log import log_once

    handler = logging.StreamHandler(sys.stderr)
    logger = logging.getLogger("autotrace")
    logger.addHandler(handler)
    try:
        log_once("test-notice-outside-an-exception", "autotrace: a notice")
        try:
            raise KeyError("inside")
        except KeyError:
            log_once("test-notice-inside-an-exception", "autotrace: a failure")
    finally:
        logger.removeHandler(handler)
    err = capfd.readouterr().err
    assert err.startswith("autotrace: a notice\nautotrace: a failure\nTraceback"), err
    assert "NoneType" not in err
