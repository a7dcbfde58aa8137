"""Coroutines, generators and async generators: when spans start, end, and are current."""

from __future__ import annotations

import asyncio
import gc

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from .conftest import Traced, parent_name

SOURCE = '''
import asyncio, time
from opentelemetry import trace

def child(x):
    return x

def numbers(n):
    for i in range(n):
        child(i)
        yield i
    return "finished"

def failing(n):
    yield 1
    raise ValueError("gen broke")

def echo():
    received = []
    try:
        while True:
            value = yield len(received)
            received.append(value)
    except KeyError:
        yield "handled"
    finally:
        received.append("closed")

async def work(x):
    await asyncio.sleep(0.02)
    child(x)
    return x * 2

async def failing_work():
    await asyncio.sleep(0)
    raise KeyError("async broke")

async def agen(n):
    for i in range(n):
        await asyncio.sleep(0)
        child(i)
        yield i

async def fan_out():
    return await asyncio.gather(work(1), work(2))
'''


def test_generator_span_covers_the_body_and_is_current_only_inside(traced: Traced,
                                                                  provider) -> None:
    mod = traced.load("gens", SOURCE)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("consumer"):
        gen = mod.numbers(2)
        assert traced.names() == []  # created, not started: no span yet
        for item in gen:
            with tracer.start_as_current_span(f"consume-{item}"):
                pass
    spans = traced.spans()
    assert parent_name(spans, traced.span("numbers")) == "consumer"
    assert [parent_name(spans, s) for s in spans if s.name == "child"] == ["numbers", "numbers"]
    # what the consumer does between two items is not the generator's child
    assert parent_name(spans, traced.span("consume-0")) == "consumer"
    assert parent_name(spans, traced.span("consume-1")) == "consumer"
    gen_span = traced.span("numbers")
    assert gen_span.end_time <= traced.span("consumer").end_time
    assert dict(gen_span.attributes)["code.function.return.value"] == "finished"


def test_generator_send_throw_close_are_forwarded(traced: Traced) -> None:
    mod = traced.load("gens", SOURCE)
    gen = mod.echo()
    assert next(gen) == 0
    assert gen.send("a") == 1
    assert gen.throw(KeyError("k")) == "handled"
    gen.close()
    span = traced.span("echo")
    assert span.end_time is not None and span.status.status_code is StatusCode.UNSET


def test_generator_error_abandon_and_never_started(traced: Traced) -> None:
    mod = traced.load("gens", SOURCE)
    with pytest.raises(ValueError, match="gen broke"):
        list(mod.failing(1))
    span = traced.span("failing")
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    traced.clear()
    gen = mod.numbers(5)
    next(gen)
    del gen  # abandoned half-way and collected
    gc.collect()
    assert traced.span("numbers").end_time is not None
    assert traced.span("numbers").status.status_code is StatusCode.UNSET
    traced.clear()
    unstarted = mod.numbers(5)
    unstarted.close()
    assert traced.names() == []
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing leaked


def test_coroutine_span_covers_the_await(traced: Traced, provider) -> None:
    mod = traced.load("gens", SOURCE)
    assert asyncio.run(mod.work(4)) == 8
    span = traced.span("work")
    assert (span.end_time - span.start_time) >= 15_000_000  # the 20 ms sleep is inside
    spans = traced.spans()
    assert parent_name(spans, traced.span("child")) == "work"
    assert dict(span.attributes)["code.function.return.value"] == 8


def test_coroutine_failure_and_gather_parents(traced: Traced) -> None:
    mod = traced.load("gens", SOURCE)
    with pytest.raises(KeyError):
        asyncio.run(mod.failing_work())
    assert traced.span("failing_work").status.status_code is StatusCode.ERROR
    traced.clear()
    assert asyncio.run(mod.fan_out()) == [2, 4]
    spans = traced.spans()
    works = [s for s in spans if s.name == "work"]
    assert len(works) == 2
    assert {parent_name(spans, s) for s in works} == {"fan_out"}
    children = [s for s in spans if s.name == "child"]
    assert {parent_name(spans, s) for s in children} == {"work"}
    assert {s.parent.span_id for s in children} == {s.context.span_id for s in works}


def test_async_generator_span(traced: Traced, provider) -> None:
    mod = traced.load("gens", SOURCE)
    tracer = provider.get_tracer("test")

    async def consume() -> list[int]:
        out = []
        with tracer.start_as_current_span("consumer"):
            async for item in mod.agen(3):
                with tracer.start_as_current_span("between"):
                    out.append(item)
        return out

    assert asyncio.run(consume()) == [0, 1, 2]
    spans = traced.spans()
    assert parent_name(spans, traced.span("agen")) == "consumer"
    assert {parent_name(spans, s) for s in spans if s.name == "child"} == {"agen"}
    assert {parent_name(spans, s) for s in spans if s.name == "between"} == {"consumer"}


def test_async_generator_abandoned_is_ended(traced: Traced) -> None:
    mod = traced.load("gens", SOURCE)

    async def take_one() -> int:
        async for item in mod.agen(10):
            return item
        return -1

    assert asyncio.run(take_one()) == 0  # asyncio.run finalizes the abandoned generator
    span = traced.span("agen")
    assert span.end_time is not None and span.status.status_code is StatusCode.UNSET


PENDING_SOURCE = '''
import time

def fast(x):
    return x

def slow_items(first, n):
    for i in range(n):
        first = None  # the body rebinds its argument: the span keeps what it was given
        time.sleep(0.01)
        yield fast(i)

def quick_items(n):
    yield from range(n)
'''


def test_pending_generators_keep_their_arguments_and_end_when_abandoned(
        traced: Traced) -> None:
    """Under ``min_duration`` a generator's call is pending (started and dropped in C in
    the compiled core): a slow one is kept with the arguments it was called with, a fast
    one is dropped, and one abandoned half-way ends when it is collected."""
    mod = traced.load("pending_gens", PENDING_SOURCE, min_duration="5ms")
    assert list(mod.slow_items("given", 2)) == [0, 1]
    assert list(mod.quick_items(3)) == [0, 1, 2]
    kept = traced.span("slow_items")
    assert dict(kept.attributes)["code.function.parameters.first.value"] == "given"
    assert "quick_items" not in traced.names()
    traced.clear()
    gen = mod.slow_items("abandoned", 5)
    next(gen)
    del gen  # abandoned half-way and collected: its span ends, and it was slow
    gc.collect()
    span = traced.span("slow_items")
    assert span.end_time is not None
    assert dict(span.attributes)["code.function.parameters.first.value"] == "abandoned"
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing leaked


CELL_SOURCE = '''
import time

def every_kind(a, b=2, *rest, k=3, **kw):
    def inner():
        return a  # `a` lives in a cell
    a = "rebound"
    time.sleep(0.01)
    yield inner()
'''


def test_a_pending_generator_keeps_every_kind_of_parameter(traced: Traced) -> None:
    """A generator's arguments are read as it starts (in C under the compiled core: the
    frame's own slots, no ``f_locals``): positional, defaulted, ``*args``, keyword-only,
    ``**kwargs``, and one held in a cell for a closure, each as it was given."""
    mod = traced.load("cell_gens", CELL_SOURCE, min_duration="5ms")
    assert list(mod.every_kind(1, 5, 6, 7, k=4, z=9)) == ["rebound"]
    attrs = dict(traced.span("every_kind").attributes)
    prefix = "code.function.parameters."
    assert {key[len(prefix):-len(".value")]: value for key, value in attrs.items()
            if key.startswith(prefix) and key.endswith(".value")} == {
        "a": 1, "b": 5, "rest": "(6, 7)", "k": 4, "kw": "{'z': 9}"}
