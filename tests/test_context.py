"""Spans behave like ``tracer.start_as_current_span`` around the call, and never recurse."""

from __future__ import annotations

import threading

from opentelemetry import context, trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from .conftest import Traced, parent_name

SOURCE = '''
from opentelemetry import trace

def leaf(x):
    return trace.get_current_span()

def middle(x):
    return leaf(x), trace.get_current_span()

class Loud:
    def __init__(self):
        self.reprs = 0
    def __repr__(self):
        self.reprs += 1
        return "Loud"

def takes(obj):
    return obj

def in_thread():
    import threading
    result = {}
    def run():
        result["span"] = leaf(1)
    t = threading.Thread(target=run)
    t.start(); t.join()
    return result["span"]
'''


def test_parenting_and_current_span_inside_the_body(traced: Traced, provider) -> None:
    mod = traced.load("ctx", SOURCE)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        leaf_current, middle_current = mod.middle(1)
        assert trace.get_current_span() is request  # restored after the call
    spans = traced.spans()
    assert parent_name(spans, traced.span("middle")) == "request"
    assert parent_name(spans, traced.span("leaf")) == "middle"
    assert leaf_current.get_span_context().span_id == traced.span("leaf").context.span_id
    assert middle_current.get_span_context().span_id == traced.span("middle").context.span_id
    assert {s.context.trace_id for s in spans} == {request.get_span_context().trace_id}


def test_threads_start_their_own_trace_like_start_as_current_span(traced: Traced) -> None:
    mod = traced.load("ctx", SOURCE)
    mod.in_thread()
    spans = traced.spans()
    # both backends trace the closure the thread runs; a new thread starts with no context
    assert parent_name(spans, traced.span("leaf")) == "in_thread.<locals>.run"
    assert parent_name(spans, traced.span("in_thread.<locals>.run")) is None


def test_suppress_instrumentation_is_honoured(traced: Traced) -> None:
    mod = traced.load("ctx", SOURCE)
    token = context.attach(context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        mod.leaf(1)
    finally:
        context.detach(token)
    assert traced.names() == []
    mod.leaf(1)
    assert traced.names() == ["leaf"]


def test_no_attribute_work_when_not_recording(traced: Traced, exporter) -> None:
    sampled_out = TracerProvider(sampler=ALWAYS_OFF)
    sampled_out.add_span_processor(SimpleSpanProcessor(exporter))
    mod = traced.load("ctx", SOURCE, repr_objects=True, tracer_provider=sampled_out)
    loud = mod.Loud()
    current = mod.takes(loud)
    assert current is loud and loud.reprs == 0  # nothing was rendered
    assert traced.names() == []
    # the non-recording span is still current, so children see a sampled-out parent
    span = mod.leaf(1)
    assert not span.is_recording() and span.get_span_context().is_valid


def test_without_an_sdk_calls_pass_straight_through(traced: Traced, modules) -> None:
    # No provider given and no global SDK provider: nothing to record.
    name = modules.module("nosdk", "def f(x):\n    return x * 3\n")
    traced.install(tracer_provider=None)
    mod = __import__(name)
    assert mod.f(2) == 6
    assert traced.names() == []


class _CallsTracedCode(SpanProcessor):
    """A span processor that calls traced code, as a careless user's might."""

    def __init__(self) -> None:
        self.func = None
        self.calls = 0

    def on_start(self, span, parent_context=None) -> None:
        if self.func is not None:
            self.calls += 1
            self.func(0)

    def on_end(self, span) -> None:
        if self.func is not None:
            self.func(0)


def test_code_run_by_autotrace_itself_is_not_traced(traced: Traced, exporter) -> None:
    processor = _CallsTracedCode()
    tp = TracerProvider()
    tp.add_span_processor(processor)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    mod = traced.load("ctx", SOURCE + '''
class Recursive:
    def __repr__(self):
        return "R" + str(len(repr_helper()))

def repr_helper():
    return "helper"
''', repr_objects=True, tracer_provider=tp)
    processor.func = mod.leaf
    mod.takes(mod.Recursive())
    assert processor.calls == 1
    assert traced.names() == ["takes"]  # neither leaf (processor) nor repr_helper (repr)
    assert traced.args("takes") == {"obj": "R6"}


def test_threads_concurrently(traced: Traced) -> None:
    mod = traced.load("ctx", SOURCE)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for i in range(200):
                mod.middle(i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    spans = traced.spans()
    assert len(spans) == 4 * 200 * 2
    by_id = {s.context.span_id: s for s in spans}
    for s in spans:
        if s.name == "leaf":
            assert by_id[s.parent.span_id].name == "middle"
        else:
            assert s.parent is None
