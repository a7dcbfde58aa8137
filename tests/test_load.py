"""Load: many threads and tasks at once, deep recursion, abandoned generators, cancelled
coroutines. Every traced call makes exactly one span, with the right parent, and every
span that starts ends exactly once; none is lost on the way to the exporter.

Spans go through a real ``BatchSpanProcessor`` sized for the load, and are counted
after ``force_flush``; a second processor records every ``on_start``/``on_end``.
No timing assertions: waits are bounded generously and only guard against hangs.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .conftest import Traced

THREADS = 8
CALLS_PER_THREAD = 10_000
TASKS = 1_000
FLUSH_MS = 120_000


class Lifecycle(SpanProcessor):
    """Records every span start and end (ids), to prove each span ends exactly once."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.ended: list[int] = []
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        with self._lock:
            self.started.append(span.context.span_id)

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self.ended.append(span.context.span_id)

    def assert_each_ended_once(self) -> None:
        twice = [sid for sid, n in Counter(self.ended).items() if n > 1]
        assert not twice, f"{len(twice)} spans ended more than once"
        never = set(self.started) - set(self.ended)
        assert not never, f"{len(never)} of {len(self.started)} spans never ended"
        assert len(self.started) == len(self.ended)


class Load:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.lifecycle = Lifecycle()
        self.provider = TracerProvider()
        self.provider.add_span_processor(self.lifecycle)
        self.provider.add_span_processor(BatchSpanProcessor(
            self.exporter, max_queue_size=THREADS * CALLS_PER_THREAD * 2,
            max_export_batch_size=4096, schedule_delay_millis=50))

    def flushed(self) -> list[ReadableSpan]:
        assert self.provider.force_flush(FLUSH_MS), "force_flush timed out"
        return list(self.exporter.get_finished_spans())


@pytest.fixture
def load() -> Iterator[Load]:
    made = Load()
    yield made
    made.provider.shutdown()


def _args(span: ReadableSpan) -> dict[str, Any]:
    prefix, suffix = "code.function.parameters.", ".value"
    return {k[len(prefix):-len(suffix)]: v for k, v in (span.attributes or {}).items()
            if k.startswith(prefix)}


def test_threads_each_call_one_span_with_the_right_parent(traced: Traced, load: Load) -> None:
    mod = traced.load("mod", """
        def work(worker, i):
            return worker * 100_000 + i
    """, tracer_provider=load.provider)
    tracer = load.provider.get_tracer("test")
    roots: dict[int, int] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(w: int) -> None:
        try:
            with tracer.start_as_current_span(f"root-{w}") as root:
                roots[w] = root.get_span_context().span_id
                start.wait(timeout=60)
                for i in range(CALLS_PER_THREAD):
                    assert mod.work(w, i) == w * 100_000 + i
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
        assert not t.is_alive(), "a worker thread hung"
    assert not errors, errors

    spans = load.flushed()
    work = [s for s in spans if s.name == "work"]
    assert len(work) == THREADS * CALLS_PER_THREAD, "spans lost or duplicated"
    seen = Counter((a["worker"], a["i"]) for a in map(_args, work))
    assert len(seen) == THREADS * CALLS_PER_THREAD and set(seen.values()) == {1}
    for span in work:
        assert span.parent is not None
        assert span.parent.span_id == roots[_args(span)["worker"]], "wrong parent"
    load.lifecycle.assert_each_ended_once()


def test_asyncio_tasks_nest_under_the_right_parents(traced: Traced, load: Load) -> None:
    mod = traced.load("mod", """
        import asyncio

        def leaf(n):
            return n

        async def child(n):
            await asyncio.sleep(0)
            return leaf(n)

        async def handle(n):
            await asyncio.sleep(0)
            value = await child(n)
            await asyncio.sleep(0)
            return value + 1
    """, tracer_provider=load.provider)
    tracer = load.provider.get_tracer("test")

    async def main() -> tuple[list[int], int]:
        with tracer.start_as_current_span("root") as root:
            results = await asyncio.gather(*(mod.handle(n) for n in range(TASKS)))
            return list(results), root.get_span_context().span_id

    results, root_id = asyncio.run(main())
    assert results == [n + 1 for n in range(TASKS)]
    spans = load.flushed()
    by_name: dict[str, dict[int, ReadableSpan]] = {"handle": {}, "child": {}, "leaf": {}}
    for span in spans:
        if span.name in by_name:
            n = _args(span)["n"]
            assert n not in by_name[span.name], f"two {span.name} spans for n={n}"
            by_name[span.name][n] = span
    for name, found in by_name.items():
        assert len(found) == TASKS, f"{name}: {len(found)} spans, expected {TASKS}"
    for n in range(TASKS):
        handle, child, leaf = (by_name[k][n] for k in ("handle", "child", "leaf"))
        assert handle.parent is not None and handle.parent.span_id == root_id
        assert child.parent is not None and child.parent.span_id == handle.context.span_id
        assert leaf.parent is not None and leaf.parent.span_id == child.context.span_id
    load.lifecycle.assert_each_ended_once()


RECURSIVE = """
    def depth(n):
        return 0 if n == 0 else 1 + depth(n - 1)

    def unbounded(n):
        return unbounded(n + 1)

    def shallow():
        return "ok"
"""


def test_deep_recursion_one_span_per_level(traced: Traced, load: Load) -> None:
    mod = traced.load("mod", RECURSIVE, tracer_provider=load.provider)
    assert mod.depth(150) == 150
    spans = [s for s in load.flushed() if s.name == "depth"]
    assert len(spans) == 151
    by_n = {_args(s)["n"]: s for s in spans}
    for n in range(150):
        parent = by_n[n].parent
        assert parent is not None and parent.span_id == by_n[n + 1].context.span_id
    load.lifecycle.assert_each_ended_once()


def test_recursion_error_passes_through_and_every_span_ends(traced: Traced,
                                                            load: Load) -> None:
    mod = traced.load("mod", RECURSIVE, tracer_provider=load.provider)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(400)
    try:
        with pytest.raises(RecursionError):
            mod.unbounded(0)
    finally:
        sys.setrecursionlimit(limit)
    assert trace.get_current_span() is trace.INVALID_SPAN, "a span leaked into the caller"
    assert mod.shallow() == "ok"
    spans = load.flushed()
    unbounded = [s for s in spans if s.name == "unbounded"]
    assert unbounded, "no span for the recursion at all"
    assert all(not s.status.is_ok for s in unbounded)
    shallow = [s for s in spans if s.name == "shallow"]
    assert len(shallow) == 1 and shallow[0].parent is None
    load.lifecycle.assert_each_ended_once()


def test_generators_abandoned_half_way_end_their_spans_once(traced: Traced,
                                                            load: Load) -> None:
    mod = traced.load("mod", """
        def numbers(n):
            for i in range(n):
                yield i

        def guarded(n):
            try:
                for i in range(n):
                    yield i
            finally:
                pass
    """, tracer_provider=load.provider)
    gens = [mod.numbers(10) for _ in range(200)] + [mod.guarded(10) for _ in range(200)]
    for g in gens:
        assert next(g) == 0
    for g in gens[::4]:
        g.close()
    # the rest is dropped half-way: collected, in this thread and in another one
    other = gens[1::4]
    del gens, g
    gc.collect()
    def drop_elsewhere() -> None:
        other.clear()
        gc.collect()

    worker = threading.Thread(target=drop_elsewhere)
    worker.start()
    worker.join(timeout=60)
    gc.collect()
    spans = [s for s in load.flushed() if s.name in ("numbers", "guarded")]
    assert len(spans) == 400
    assert all(s.status.is_ok for s in spans), "abandoning a generator is not an error"
    load.lifecycle.assert_each_ended_once()
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_cancelled_coroutines_end_their_spans_once(traced: Traced, load: Load) -> None:
    mod = traced.load("mod", """
        import asyncio

        async def inner(event):
            await event.wait()

        async def waiter(event, n):
            await inner(event)
            return n
    """, tracer_provider=load.provider)

    async def main() -> list[Any]:
        event = asyncio.Event()
        tasks = [asyncio.ensure_future(mod.waiter(event, n)) for n in range(300)]
        await asyncio.sleep(0)
        for task in tasks[::2]:
            task.cancel()
        await asyncio.sleep(0)
        event.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    cancelled = [r for r in results if isinstance(r, asyncio.CancelledError)]
    assert len(cancelled) == 150
    assert sorted(r for r in results if isinstance(r, int)) == list(range(1, 300, 2))
    spans = load.flushed()
    for name in ("waiter", "inner"):
        found = [s for s in spans if s.name == name]
        assert len(found) == 300, (name, len(found))
        assert all(s.status.is_ok for s in found), "cancellation is not an error"
    load.lifecycle.assert_each_ended_once()


def test_a_generator_closed_while_referenced_ends_its_span_at_close(traced: Traced,
                                                                    load: Load) -> None:
    mod = traced.load("mod", """
        def numbers(n):
            for i in range(n):
                yield i
    """, tracer_provider=load.provider)
    g = mod.numbers(3)
    assert next(g) == 0
    g.close()
    ended_at_close = len(load.lifecycle.ended) == 1
    del g
    gc.collect()
    load.lifecycle.assert_each_ended_once()
    assert len(load.flushed()) == 1
    if not ended_at_close and traced.backend == "monitoring" and sys.version_info[:2] == (3, 13):
        pytest.xfail("CPython 3.13 before gh-140373 sends no event at close(); the span "
                     "ends when the generator is released (README, backends table)")
    assert ended_at_close
