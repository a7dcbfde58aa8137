"""Policies decided by the recorder: min_duration (when a call ends), keep_errors,
require_parent and max_depth (when it starts). Both backends, generators included."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from .conftest import Traced, parent_name

SOURCE = """
import time

def fast(x):
    return x + 1

def slow(x, label="s"):
    time.sleep(0.02)
    return x * 2

def outer(n):
    total = 0
    for i in range(n):
        total += fast(i)
    return slow(total)

def failing(x):
    raise ValueError(f"bad {x}")

def calls_failing():
    try:
        failing(1)
    except ValueError:
        return "caught"

def handles_slowly():
    for i in range(3):
        try:
            failing(i)
        except ValueError:
            pass
    time.sleep(0.02)
    return "handled"

def passes_through():
    return failing(2)

def wraps_failure():
    try:
        failing(3)
    except ValueError as exc:
        raise RuntimeError("wrapped") from exc

def mid():
    return slow(3)

def top():
    fast(0)
    return mid()

def foreign(tracer):
    with tracer.start_as_current_span("http-client"):
        return fast(1)

def reads_context():
    from opentelemetry import trace
    return trace.get_current_span().get_span_context().is_valid

def gen_slow(n):
    for i in range(n):
        time.sleep(0.01)
        yield i

def gen_fast(n):
    yield from range(n)

async def coro_slow():
    import asyncio
    await asyncio.sleep(0.02)
    return "done"

def recurse(n):
    if n == 0:
        return 0
    return recurse(n - 1) + 1

def recurse_then_fail(n):
    if n == 0:
        raise KeyError("deep")
    return recurse_then_fail(n - 1)
"""


def _load(traced: Traced, **kwargs: Any) -> Any:
    return traced.load("pol", SOURCE, **kwargs)


def test_fast_calls_make_no_span_and_the_first_slow_call_is_complete(traced: Traced) -> None:
    # 10ms: a function's first call also describes it, which a loaded machine (CI running
    # suites side by side) once stretched past 5ms; ``slow`` sleeps 20ms
    mod = _load(traced, min_duration="10ms")
    assert mod.fast(1) == 2
    assert traced.spans() == []
    assert mod.slow(4, label="first") == 8
    span = traced.span("slow")
    assert traced.args("slow") == {"x": 4, "label": "first"}
    assert traced.attrs("slow")["code.function.return.value"] == 8
    assert span.end_time - span.start_time >= 15_000_000  # its real start time
    assert traced.attrs("slow")["code.function.name"].endswith("pol.slow")


def test_ancestors_of_a_kept_call_are_kept_and_fast_siblings_dropped(traced: Traced) -> None:
    mod = _load(traced, min_duration="5ms")
    assert mod.top() == 6
    spans = traced.spans()
    assert sorted(s.name for s in spans) == ["mid", "slow", "top"]
    assert parent_name(spans, traced.span("slow")) == "mid"
    assert parent_name(spans, traced.span("mid")) == "top"
    assert traced.span("top").parent is None
    top, mid = traced.span("top"), traced.span("mid")
    assert top.start_time <= mid.start_time and mid.end_time <= top.end_time
    assert traced.args("mid") == {} and traced.attrs("mid")["code.function.return.value"] == 6


def test_a_failure_that_escapes_is_kept_with_its_chain(traced: Traced) -> None:
    mod = _load(traced, min_duration="1s")
    with pytest.raises(ValueError):
        mod.passes_through()
    failing, caller = traced.span("failing"), traced.span("passes_through")
    assert parent_name(traced.spans(), failing) == "passes_through"
    assert failing.status.status_code is trace.StatusCode.ERROR
    assert caller.status.status_code is trace.StatusCode.ERROR
    assert [e.name for e in failing.events] == ["exception"]
    assert caller.events == ()  # the same exception: its event is on the child only
    assert traced.args("failing") == {"x": 2}


def test_a_failure_handled_by_its_traced_caller_is_counted_on_it(traced: Traced) -> None:
    mod = _load(traced, min_duration="5ms")
    mod.calls_failing()  # the first calls describe the functions: not timed below
    traced.clear()
    assert mod.calls_failing() == "caught"
    assert traced.spans() == []  # handled, and its caller was short: nothing kept
    assert mod.handles_slowly() == "handled"
    assert traced.names() == ["handles_slowly"]  # kept as slow; the failures counted on it
    attrs = traced.attrs("handles_slowly")
    assert attrs["autotrace.handled_exceptions.type"] == ("ValueError",)
    assert attrs["autotrace.handled_exceptions.count"] == (3,)
    assert traced.span("handles_slowly").status.status_code is trace.StatusCode.UNSET


def test_a_failure_turned_into_another_exception_escaped(traced: Traced) -> None:
    mod = _load(traced, min_duration="1s")
    with pytest.raises(RuntimeError):
        mod.wraps_failure()
    failing, caller = traced.span("failing"), traced.span("wraps_failure")
    assert parent_name(traced.spans(), failing) == "wraps_failure"
    # each raised its own exception: each span has its own event
    assert [e.attributes["exception.type"] for e in failing.events] == ["ValueError"]
    assert [e.attributes["exception.type"] for e in caller.events] == ["RuntimeError"]


def test_a_failure_that_reaches_a_foreign_span_is_kept(traced: Traced,
                                                       provider: TracerProvider) -> None:
    mod = _load(traced, min_duration="1s")
    with provider.get_tracer("program").start_as_current_span("request"):
        with pytest.raises(ValueError):
            mod.failing(4)
    assert parent_name(traced.spans(), traced.span("failing")) == "request"


def test_keep_handled_errors_keeps_every_failure_however_short(traced: Traced) -> None:
    mod = _load(traced, min_duration="1s", keep_handled_errors=True)
    assert mod.calls_failing() == "caught"
    failing = traced.span("failing")
    assert failing.status.status_code is trace.StatusCode.ERROR
    assert [e.name for e in failing.events] == ["exception"]
    assert traced.args("failing") == {"x": 1}
    # its caller returned normally and fast: only kept as the failure's parent
    caller = traced.span("calls_failing")
    assert parent_name(traced.spans(), failing) == "calls_failing"
    assert caller.status.status_code is trace.StatusCode.UNSET


def test_keep_errors_false_drops_fast_failures(traced: Traced) -> None:
    mod = _load(traced, min_duration="1s", keep_errors=False)
    assert mod.calls_failing() == "caught"
    assert traced.spans() == []


def test_exception_event_only_on_the_innermost_kept_span(traced: Traced) -> None:
    mod = _load(traced, min_duration="1s")
    with pytest.raises(KeyError):
        mod.recurse_then_fail(3)
    spans = traced.spans()
    assert len(spans) == 4
    with_event = [s for s in spans if s.events]
    assert len(with_event) == 1
    assert with_event[0].attributes["code.function.parameters.n.value"] == 0


def test_a_foreign_span_inside_a_pending_call_gets_a_real_exported_parent(
        traced: Traced, provider: TracerProvider) -> None:
    mod = _load(traced, min_duration="1s")
    tracer = provider.get_tracer("other-instrumentation")
    assert mod.foreign(tracer) == 2
    spans = traced.spans()
    client = traced.span("http-client")
    assert parent_name(spans, client) == "foreign"  # exported, not a dangling id
    assert traced.args("foreign") == {"tracer": traced.args("foreign")["tracer"]}
    assert "fast" not in [s.name for s in spans]


def test_reading_the_current_span_context_keeps_the_call(traced: Traced) -> None:
    mod = _load(traced, min_duration="1s")
    assert mod.reads_context() is True
    assert traced.names() == ["reads_context"]


def test_min_duration_for_generators_and_coroutines(traced: Traced) -> None:
    mod = _load(traced, min_duration="15ms")
    assert list(mod.gen_fast(3)) == [0, 1, 2]
    assert traced.spans() == []
    assert list(mod.gen_slow(3)) == [0, 1, 2]  # 30 ms of body, across suspensions
    assert traced.args("gen_slow") == {"n": 3}
    assert asyncio.run(mod.coro_slow()) == "done"
    assert traced.attrs("coro_slow")["code.function.return.value"] == "done"


def test_min_duration_keeps_separate_chains_per_thread(traced: Traced) -> None:
    mod = _load(traced, min_duration="5ms")
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(mod.top())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [6] * 4
    spans = traced.spans()
    assert sorted(s.name for s in spans) == ["mid"] * 4 + ["slow"] * 4 + ["top"] * 4
    for span in spans:
        if span.name == "slow":
            assert parent_name(spans, span) == "mid"
    assert len({s.context.trace_id for s in spans}) == 4


def test_require_parent_traces_only_under_a_valid_span(traced: Traced,
                                                      provider: TracerProvider) -> None:
    mod = _load(traced, require_parent=True)
    assert mod.top() == 6
    assert traced.spans() == []
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("request"):
        assert mod.top() == 6
    spans = traced.spans()
    assert sorted(s.name for s in spans) == ["fast", "mid", "request", "slow", "top"]
    assert parent_name(spans, traced.span("top")) == "request"
    assert parent_name(spans, traced.span("slow")) == "mid"


def test_require_parent_with_min_duration(traced: Traced, provider: TracerProvider) -> None:
    mod = _load(traced, require_parent=True, min_duration="5ms")
    assert mod.top() == 6
    assert traced.spans() == []
    with provider.get_tracer("app").start_as_current_span("job"):
        assert mod.top() == 6
    assert sorted(traced.names()) == ["job", "mid", "slow", "top"]


def test_max_depth_cuts_the_chain_and_counts_what_was_cut(traced: Traced) -> None:
    mod = _load(traced, max_depth=3)
    assert mod.recurse(10) == 10
    spans = traced.spans()
    assert len(spans) == 3
    depths = sorted(spans, key=lambda s: s.start_time)
    deepest = depths[-1]
    assert deepest.attributes["autotrace.depth_limited_calls"] == 8
    assert all("autotrace.depth_limited_calls" not in s.attributes for s in depths[:-1])


def test_max_depth_with_min_duration_and_errors(traced: Traced) -> None:
    mod = _load(traced, max_depth=2, min_duration="1s")
    with pytest.raises(KeyError):
        mod.recurse_then_fail(5)
    # the failure happened below the limit: the two kept levels carry it
    spans = traced.spans()
    assert len(spans) == 2
    assert all(s.status.status_code is trace.StatusCode.ERROR for s in spans)
    assert sum(1 for s in spans if s.events) == 1


def test_dropped_calls_do_not_change_results_or_exceptions(traced: Traced) -> None:
    mod = _load(traced, min_duration="1s", keep_errors=False)
    assert mod.outer(50) == mod.slow(sum(range(1, 51))) // 1
    with pytest.raises(ValueError, match="bad 2"):
        mod.failing(2)
    assert traced.spans() == []


@pytest.mark.parametrize(("kwargs", "error", "fragment"), [
    ({"min_duration": "5 ms"}, ValueError, "min_duration='5 ms'"),
    ({"min_duration": "5xs"}, ValueError, "unknown unit 'xs'"),
    ({"min_duration": 0}, ValueError, "positive"),
    ({"min_duration": -1.0}, ValueError, "positive"),
    ({"min_duration": True}, TypeError, "min_duration=True"),
    ({"max_depth": 0}, ValueError, "max_depth=0"),
    ({"max_depth": 1.5}, TypeError, "max_depth=1.5"),
    ({"require_parent": "yes"}, TypeError, "require_parent='yes'"),
    ({"keep_errors": 1}, TypeError, "keep_errors=1"),
])
def test_bad_policy_values_fail_at_install(kwargs: dict[str, Any], error: type[Exception],
                                           fragment: str) -> None:
    import autotrace

    with pytest.raises(error) as info:
        autotrace.install(["x"], **kwargs)
    assert fragment in str(info.value)
    assert autotrace.active_installation() is None


@pytest.mark.parametrize(("var", "value", "expected"), [
    ("OTEL_PYTHON_AUTOTRACE_MIN_DURATION", "5", 0.005),  # bare number: milliseconds
    ("OTEL_PYTHON_AUTOTRACE_MIN_DURATION", "250us", 0.00025),
    ("OTEL_PYTHON_AUTOTRACE_MIN_DURATION", "1.5s", 1.5),
    ("OTEL_PYTHON_AUTOTRACE_MAX_DEPTH", "7", 7),
    ("OTEL_PYTHON_AUTOTRACE_REQUIRE_PARENT", "true", True),
    ("OTEL_PYTHON_AUTOTRACE_KEEP_ERRORS", "false", False),
    ("OTEL_PYTHON_AUTOTRACE_KEEP_HANDLED_ERRORS", "true", True),
])
def test_policies_from_the_environment(var: str, value: str, expected: Any) -> None:
    from autotrace.config import make_config

    config = make_config(environ={"OTEL_PYTHON_AUTOTRACE_PATTERNS": "x", var: value})
    name = var.removeprefix("OTEL_PYTHON_AUTOTRACE_").lower()
    assert getattr(config, name) == pytest.approx(expected)


def test_kept_calls_carry_their_arguments_however_they_end(traced: Traced) -> None:
    """A pending call's arguments are read when it ends (monitoring, compiled core: from
    its frame object, made only then): one kept as slow, one kept as it raised, and an
    ancestor kept for its child."""
    mod = _load(traced, min_duration="5ms")
    with pytest.raises(ValueError):
        mod.passes_through()
    assert mod.outer(3) == 12
    assert traced.args("failing") == {"x": 2}
    assert traced.args("slow") == {"x": 6, "label": "s"}
    assert traced.args("outer") == {"n": 3}
    assert sorted(s.name for s in traced.spans()) == ["failing", "outer", "passes_through",
                                                      "slow"]


def test_a_failure_handled_by_a_caller_kept_for_its_child_is_counted(traced: Traced) -> None:
    """The caller becomes real when a later child is kept; the failure it handled before
    is still counted on it, not kept as a span of its own (docs/policies.md)."""
    mod = traced.load("handled_kept", """
        import time
        def failing(x): raise ValueError(x)
        def slow():
            time.sleep(0.02)
            return 1
        def outer():
            try:
                failing(1)
            except ValueError:
                pass
            return slow()
    """, min_duration="5ms")
    assert mod.outer() == 1
    assert sorted(traced.names()) == ["outer", "slow"]
    attrs = traced.attrs("outer")
    assert attrs["autotrace.handled_exceptions.type"] == ("ValueError",)
    assert attrs["autotrace.handled_exceptions.count"] == (1,)


class _SeenBySampler:
    """A sampler that keeps what each span asked it with, and samples as told."""

    def __init__(self, delegate: Any) -> None:
        self.delegate = delegate
        self.seen: dict[str, dict[str, Any]] = {}

    def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any,
                      **kwargs: Any) -> Any:
        attributes = kwargs.get("attributes", args[1] if len(args) > 1 else None)
        self.seen[name] = dict(attributes or {})
        return self.delegate.should_sample(parent_context, trace_id, name, *args, **kwargs)

    def get_description(self) -> str:
        return "seen"


def _with_sampler(traced: Traced, sampler: Any) -> Traced:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Traced(traced.modules, exporter, provider, traced.backend, traced.core)


class _SeenAtStart(SpanProcessor):
    """What each span held when it started."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, Any]] = {}

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.seen[span.name] = dict(span.attributes or {})


def test_a_kept_call_s_span_starts_with_all_its_attributes(traced: Traced,
                                                           provider: TracerProvider) -> None:
    # Made after the fact, a kept call's span starts with its arguments and return value
    # (one attribute pass in the SDK) when the sampler records it anyway (the default
    # here); ancestors made real for it started before their end, with what was known.
    at_start = _SeenAtStart()
    provider.add_span_processor(at_start)
    mod = _load(traced, min_duration="5ms")
    assert mod.top() == 6
    assert sorted(traced.names()) == ["mid", "slow", "top"]
    slow = at_start.seen["slow"]
    assert slow["code.function.parameters.x.value"] == 3
    assert slow["code.function.return.value"] == 6
    assert slow["code.function.name"].endswith("pol.slow")
    assert dict(traced.span("slow").attributes or {}) == slow
    assert "code.function.return.value" not in at_start.seen["mid"]
    assert traced.attrs("mid")["code.function.return.value"] == 6
    # a failure: the same, its exception event added after the start
    with pytest.raises(ValueError):
        mod.passes_through()
    assert at_start.seen["failing"]["code.function.parameters.x.value"] == 2
    assert [e.name for e in traced.span("failing").events] == ["exception"]


def test_a_kept_call_under_an_unsampled_parent_renders_nothing(traced: Traced) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

    sampler = _SeenBySampler(ParentBased(ALWAYS_ON))
    traced = _with_sampler(traced, sampler)
    mod = _load(traced, min_duration="5ms")
    unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("program")
    with unsampled.start_as_current_span("request"):
        assert mod.slow(5) == 10
    assert traced.spans() == []
    # asked, and it followed the parent; the arguments were not rendered for it
    assert sampler.seen["slow"]["code.function.name"].endswith("pol.slow")
    assert "code.function.parameters.x.value" not in sampler.seen["slow"]
    assert mod.slow(6) == 12  # at top level: recorded, with everything
    assert traced.args("slow") == {"x": 6, "label": "s"}
    assert traced.attrs("slow")["code.function.return.value"] == 12


REPRS = """
import time

class Shown:
    reprs = 0

    def __repr__(self):
        Shown.reprs += 1
        return "Shown()"

def slow_with(value):
    time.sleep(0.01)
    return value
"""


def test_a_kept_root_call_the_sampler_drops_renders_nothing(traced: Traced) -> None:
    # A ratio sampler (0: every root dropped) is not known to record roots: the span starts
    # with its code.* attributes, and nothing of the call is rendered for it.
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    sampler = _SeenBySampler(ParentBased(TraceIdRatioBased(0.0)))
    traced = _with_sampler(traced, sampler)
    mod = traced.load("reprs", REPRS, min_duration="5ms", repr_objects=True)
    shown = mod.Shown()
    for _ in range(3):
        assert mod.slow_with(shown) is shown
    assert traced.spans() == []
    assert mod.Shown.reprs == 0
    assert "code.function.parameters.value.value" not in sampler.seen["slow_with"]


def test_calls_counted_while_spans_are_off_make_no_span(traced: Traced,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    # spans=False with a policy and metrics: every call is counted, none is a span, however
    # slow (a call kept by min_duration once went on to make one).
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    mod = _load(traced, min_duration="5ms", spans=False, metrics=True,
                meter_provider=MeterProvider(metric_readers=[reader]))
    with caplog.at_level("DEBUG", logger="autotrace"):
        assert mod.slow(2) == 4
        with pytest.raises(ValueError):
            mod.passes_through()
    assert traced.spans() == []
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []
    names = {point.attributes.get("code.function.name", "")
             for rm in reader.get_metrics_data().resource_metrics
             for sm in rm.scope_metrics for metric in sm.metrics
             for point in metric.data.data_points}
    assert any(name.endswith("pol.slow") for name in names)


def test_the_sampler_is_found_behind_the_tracers_that_stand_for_the_sdk_s() -> None:
    from opentelemetry.sdk.trace.sampling import (
        ALWAYS_OFF,
        ALWAYS_ON,
        ParentBased,
        TraceIdRatioBased,
    )

    from autotrace.record.spans import making_tracer, samples_every_root
    from autotrace.zerocode.provider import FallbackTracerProvider

    for sampler, expected in ((ALWAYS_ON, True), (ParentBased(ALWAYS_ON), True),
                              (ALWAYS_OFF, False), (ParentBased(TraceIdRatioBased(1.0)), False),
                              (_SeenBySampler(ALWAYS_ON), False)):
        sdk = TracerProvider(sampler=sampler)  # type: ignore[arg-type]
        tracer = sdk.get_tracer("t")
        assert making_tracer(tracer) is tracer
        assert samples_every_root(tracer) is expected, sampler
        # the command's: its own provider until the program sets one (none in this
        # process: a test that sets one runs in a process of its own)
        fallback = FallbackTracerProvider(lambda sdk=sdk: sdk)  # type: ignore[misc]
        assert samples_every_root(making_tracer(fallback.get_tracer("t"))) is expected
    assert samples_every_root(making_tracer(trace.NoOpTracer())) is False
    assert making_tracer(None) is None and samples_every_root(None) is False


STALE_ROOTS = '''
import sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
import autotrace
from autotrace.zerocode.provider import FallbackTracerProvider

own = InMemorySpanExporter()

def build():
    sdk = TracerProvider()  # the SDK's default sampler: every root recorded
    sdk.add_span_processor(SimpleSpanProcessor(own))
    return sdk

autotrace.install([MODULE], tracer_provider=FallbackTracerProvider(build), backend=BACKEND,
                  core=CORE, min_duration="5ms", repr_objects=True)
mod = __import__(MODULE)
mod.slow_with(1)  # a kept root under the command's own provider
assert len(own.get_finished_spans()) == 1
program = InMemorySpanExporter()
provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0)))  # every root dropped
provider.add_span_processor(SimpleSpanProcessor(program))
trace.set_tracer_provider(provider)
shown = mod.Shown()
for _ in range(3):
    assert mod.slow_with(shown) is shown
print(len(own.get_finished_spans()), len(program.get_finished_spans()), mod.Shown.reprs)
'''


def test_the_program_s_sampler_counts_once_it_sets_its_provider(
        traced: Traced, tmp_path: Any) -> None:
    # Under the command the recorder's tracer stays one object while the spans it makes
    # move to the program's provider: what its sampler does with roots is asked again.
    import os
    import subprocess
    import sys

    module = traced.modules.module("stale", REPRS)
    script = tmp_path / "stale_roots.py"
    script.write_text(STALE_ROOTS.replace("MODULE", repr(module)).replace(
        "BACKEND", repr(traced.backend)).replace("CORE", repr(traced.core)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=str(traced.modules.root),
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, (str(traced.modules.root),
                                            os.environ.get("PYTHONPATH"))))})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "0", "0"], done.stdout + done.stderr
