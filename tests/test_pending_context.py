"""The OpenTelemetry context inside a pending call, as the program and other
instrumentation see it. The compiled core shows a pending call's context without
setting the ContextVar (``_core.c``: "Shown, not set"); the pure core sets it. Both
must answer alike: these run on both cores and both backends."""

from __future__ import annotations

import contextvars
import threading
from typing import Any

from opentelemetry import baggage, context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.trace import TracerProvider

from .conftest import Traced, parent_name

SOURCE = """
import contextvars
import threading
from opentelemetry import baggage, context

def fast(x):
    return x + 1

def attaches(tracer):
    token = context.attach(baggage.set_baggage("user", "u1"))
    with tracer.start_as_current_span("while-attached"):
        seen = baggage.get_baggage("user")
    context.detach(token)
    with tracer.start_as_current_span("after-detach"):
        pass
    return seen, baggage.get_baggage("user")

def leaks():
    context.attach(baggage.set_baggage("user", "leaked"))
    return fast(1)

def in_a_copy(tracer):
    copied = contextvars.copy_context()
    done = []
    def run():
        with tracer.start_as_current_span("in-copy"):
            done.append(fast(2))
    t = threading.Thread(target=copied.run, args=(run,))
    t.start(); t.join()
    return done

def foreign(tracer):
    with tracer.start_as_current_span("http-client"):
        return fast(1)

def calls_foreign(tracer):
    return foreign(tracer)

def steps(tracer):
    yield 1
    with tracer.start_as_current_span("step"):
        pass
    yield 2

def spawner(start_thread):
    thread = start_thread()
    yield thread
    yield 2

def run_in(ctx, fn):
    token = context.attach(ctx)  # a context captured outside, attached again inside
    try:
        return fn()
    finally:
        context.detach(token)

def leaves_in_a_step():
    context.attach(baggage.set_baggage("user", "step"))
    yield 1
    yield baggage.get_baggage("user")
"""


def _load(traced: Traced) -> Any:
    return traced.load("pctx", SOURCE, min_duration="1s")


def test_a_context_attached_inside_a_pending_call_is_seen_and_its_detach_shows_the_call(
        traced: Traced, provider: TracerProvider) -> None:
    mod = _load(traced)
    tracer = provider.get_tracer("program")
    with tracer.start_as_current_span("request"):
        assert mod.attaches(tracer) == ("u1", None)
    spans = traced.spans()
    assert parent_name(spans, traced.span("while-attached")) == "attaches"
    assert parent_name(spans, traced.span("after-detach")) == "attaches"
    assert parent_name(spans, traced.span("attaches")) == "request"


def test_a_context_left_attached_by_a_pending_call_is_undone_when_it_ends(
        traced: Traced, provider: TracerProvider) -> None:
    """As start_as_current_span around the call would: its token's reset undoes it. No
    stale PendingSpan outlives the call: what follows is parented as without it."""
    mod = _load(traced)
    tracer = provider.get_tracer("program")
    with tracer.start_as_current_span("request"):
        before = context.get_current()
        assert mod.leaks() == 2
        assert context.get_current() is before
        assert baggage.get_baggage("user") is None
        with tracer.start_as_current_span("next"):
            pass
        assert mod.calls_foreign(tracer) == 2
    spans = traced.spans()
    assert parent_name(spans, traced.span("next")) == "request"
    assert parent_name(spans, traced.span("http-client")) == "foreign"
    assert parent_name(spans, traced.span("foreign")) == "calls_foreign"
    assert parent_name(spans, traced.span("calls_foreign")) == "request"
    assert "leaks" not in traced.names() and "fast" not in traced.names()


def test_a_context_copied_inside_a_pending_call_keeps_it_in_another_thread(
        traced: Traced, provider: TracerProvider) -> None:
    mod = _load(traced)
    tracer = provider.get_tracer("program")
    assert mod.in_a_copy(tracer) == [3]
    spans = traced.spans()
    assert parent_name(spans, traced.span("in-copy")) == "in_a_copy.<locals>.run"
    assert parent_name(spans, traced.span("in_a_copy.<locals>.run")) == "in_a_copy"
    assert traced.span("in_a_copy").parent is None


def test_the_program_sees_its_own_context_objects_around_pending_calls(
        traced: Traced) -> None:
    mod = _load(traced)
    outside = context.get_current()
    token = context.attach(context.set_value("k", "v"))
    try:
        mine = context.get_current()
        assert mod.fast(1) == 2
        assert context.get_current() is mine
    finally:
        context.detach(token)
    assert context.get_current() is outside
    assert traced.spans() == []


def test_a_runtime_context_replaced_after_install_still_parents_foreign_spans(
        traced: Traced, provider: TracerProvider, monkeypatch: Any) -> None:
    """Another runtime object on the same ContextVar (a library restoring the stock one):
    pending calls set the ContextVar again, as the pure core does."""
    mod = _load(traced)
    runtime = context._RUNTIME_CONTEXT  # type: ignore[attr-defined]
    stock = object.__new__(ContextVarsRuntimeContext)
    stock.__dict__.update(vars(runtime))
    monkeypatch.setattr(context, "_RUNTIME_CONTEXT", stock)
    tracer = provider.get_tracer("program")
    assert mod.calls_foreign(tracer) == 2
    spans = traced.spans()
    assert parent_name(spans, traced.span("http-client")) == "foreign"
    assert parent_name(spans, traced.span("foreign")) == "calls_foreign"


def test_a_generator_resumed_in_another_context_shows_its_call_there(
        traced: Traced, provider: TracerProvider) -> None:
    mod = _load(traced)
    tracer = provider.get_tracer("program")
    gen = mod.steps(tracer)
    assert next(gen) == 1
    with tracer.start_as_current_span("elsewhere"):
        assert next(gen) == 2
    assert next(gen, None) is None  # ended by returning: on 3.13 before gh-140373,
    # close() sends no event and the span would end only when the generator is released
    spans = traced.spans()
    assert parent_name(spans, traced.span("step")) == "steps"
    assert traced.span("steps").parent is None  # where it started


def test_a_generator_step_that_leaves_a_context_attached_is_undone_when_it_suspends(
        traced: Traced) -> None:
    mod = _load(traced)
    before = context.get_current()
    gen = mod.leaves_in_a_step()
    assert next(gen) == 1
    assert context.get_current() is before
    assert next(gen) is None  # the next step starts from the generator's own context
    assert next(gen, "ended") == "ended"


def test_a_context_copied_in_a_generator_step_keeps_it_after_it_resumes_elsewhere(
        traced: Traced, provider: TracerProvider) -> None:
    mod = _load(traced)
    tracer = provider.get_tracer("program")
    go = threading.Event()

    def run() -> None:
        go.wait(10)
        with tracer.start_as_current_span("in-thread"):
            pass

    def start_thread() -> threading.Thread:
        thread = threading.Thread(target=contextvars.copy_context().run, args=(run,))
        thread.start()
        return thread

    gen = mod.spawner(start_thread)
    thread = next(gen)
    with tracer.start_as_current_span("elsewhere"):
        assert next(gen) == 2
    go.set()
    thread.join(10)
    assert next(gen, None) is None
    spans = traced.spans()
    assert parent_name(spans, traced.span("in-thread")) == "spawner"


def test_a_context_captured_outside_and_attached_again_inside_is_the_programs(
        traced: Traced, provider: TracerProvider) -> None:
    mod = _load(traced)
    tracer = provider.get_tracer("program")

    def callback() -> None:
        with tracer.start_as_current_span("callback"):
            pass

    with tracer.start_as_current_span("request"):
        captured = context.get_current()
        mod.run_in(captured, callback)
        assert context.get_current() is captured
    spans = traced.spans()
    assert parent_name(spans, traced.span("callback")) == "request"
    assert "run_in" not in traced.names()
