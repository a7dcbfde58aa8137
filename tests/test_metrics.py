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


def _histogram_points(provider_views: list[Any], temporality: Any, feed: Any) -> list[Any]:
    from opentelemetry.sdk.metrics import Histogram

    reader = InMemoryMetricReader(preferred_temporality={Histogram: temporality})
    provider = MeterProvider(metric_readers=[reader], views=provider_views)
    histogram = provider.get_meter("autotrace").create_histogram(DURATION, unit="s")
    out = []
    for batch in feed:
        batch(histogram)
        data = reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        out.append({key: getattr(point, key) for key in (
                            "attributes", "count", "sum", "bucket_counts", "explicit_bounds",
                            "min", "max", "value") if hasattr(point, key)})
    provider.shutdown()
    return out


@pytest.mark.parametrize("views", ["default", "buckets", "keys", "sum", "drop", "exponential"])
@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
def test_a_batch_gives_the_sdk_exactly_what_one_record_per_value_gives(
        views: str, temporality: str) -> None:
    """The batched hand-over (SDK internals) against the public API, value for value."""
    from opentelemetry.sdk.metrics.export import AggregationTemporality
    from opentelemetry.sdk.metrics.view import (
        DropAggregation,
        ExponentialBucketHistogramAggregation,
        SumAggregation,
    )

    from autotrace.record import metrics

    chosen = {
        "default": [],
        "buckets": [View(instrument_name=DURATION,
                         aggregation=ExplicitBucketHistogramAggregation([1e-6, 1e-4, 0.01]))],
        "keys": [View(instrument_name=DURATION, attribute_keys={"error.type"})],
        "sum": [View(instrument_name=DURATION, aggregation=SumAggregation())],
        "drop": [View(instrument_name=DURATION, aggregation=DropAggregation())],
        "exponential": [View(instrument_name=DURATION,
                             aggregation=ExponentialBucketHistogramAggregation())],
    }[views]
    kind = {"cumulative": AggregationTemporality.CUMULATIVE,
            "delta": AggregationTemporality.DELTA}[temporality]
    # awkward floats (their sum depends on the order), across all the buckets
    values = [(i * 7919 % 1000003) / 3e7 + 1e-9 * i for i in range(2000)]
    attrs = {"code.function.name": "m.f"}
    failed = {**attrs, "error.type": "ValueError"}

    def one_by_one(part: list[float], where: dict[str, str]) -> Any:
        return lambda h: [h.record(v, where) for v in part]

    def batched(part: list[float], where: dict[str, str]) -> Any:
        return lambda h: metrics._hand_over(h, part, where)

    feeds = [(values[:1500], attrs), (values[1500:], attrs), (values[:7], failed)]
    expected = _histogram_points(chosen, kind, [one_by_one(*f) for f in feeds])
    got = _histogram_points(chosen, kind, [batched(*f) for f in feeds])
    assert got == expected
    if views != "drop":
        assert expected  # the comparison compared something
    if views in ("default", "buckets", "keys"):  # the fast path was taken, not the fallback
        provider = MeterProvider(metric_readers=[InMemoryMetricReader()], views=chosen)
        histogram = provider.get_meter("autotrace").create_histogram(DURATION, unit="s")
        histogram.record(0.5, attrs)
        assert metrics._SdkBatch.targets(histogram, attrs)


def test_after_a_collection_calls_are_aggregated_in_the_providers_buckets(
        traced: Traced) -> None:
    """The first collection shows the SDK's buckets; later calls are counted in them
    in-process (no buffer), and the provider still ends with exact counts."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=[View(
        instrument_name=DURATION,
        aggregation=ExplicitBucketHistogramAggregation([0.001, 0.003, 1.0]))])
    m = load(traced, provider, spans=False, profile=True)
    for _ in range(40):
        m.leaf(0)
    first = points(reader)[(f"{m.__name__}.leaf", None)]
    assert first.count == 40
    stats = {s.name: s for s in traced.installation._recorder.stats.by_info.values()}  # type: ignore[union-attr]
    leaf_stats = stats[f"{m.__name__}.leaf"]
    assert leaf_stats.bounds == (0.001, 0.003, 1.0)  # aggregated from now on
    for _ in range(3):
        m.slow()  # 5 ms each; the buffer path for slow, which is new
    for _ in range(40):
        m.leaf(0)
    assert not leaf_stats.durations  # counted in the buckets, not buffered
    found = points(reader)
    leaf = found[(f"{m.__name__}.leaf", None)]
    assert leaf.count == 83 and sum(leaf.bucket_counts) == 83  # 3 calls inside slow()
    assert leaf.sum == pytest.approx(leaf_stats.total_ns / 1e9, rel=1e-9)
    assert leaf.max == pytest.approx(leaf_stats.max_ns / 1e9, rel=1e-9)
    assert list(found[(f"{m.__name__}.slow", None)].bucket_counts) == [0, 0, 3, 0]
    for _ in range(3):
        m.slow()  # now aggregated too
    assert list(points(reader)[(f"{m.__name__}.slow", None)].bucket_counts) == [0, 0, 6, 0]


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
