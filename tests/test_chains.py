"""Each task, thread, generator and coroutine keeps its own chain of pending calls (issue 21).

A pending call (``min_duration``) is found by its children through the current-call
store: a ContextVar set per call in the pure core, one chain per context written in
place in the compiled one (``_core.c``, "The current-call store"). Either way a
context copied while a call runs (an asyncio task, ``copy_context().run`` in a thread)
must keep seeing that call, whatever the original context does next; a generator
resumed elsewhere must make its call current there only while its body runs. Every
case runs on both backends and both cores with ``min_duration="1ns"``, which keeps every
call, so each span's parent says which call was current when it started.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from .conftest import Traced, parent_name

KEEP_ALL = {"min_duration": "1ns"}


def _parents(traced: Traced) -> dict[str, list[str | None]]:
    spans = traced.spans()
    out: dict[str, list[str | None]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(parent_name(spans, span))
    return {name: sorted(parents, key=str) for name, parents in out.items()}


def test_a_task_created_in_a_call_keeps_it_as_parent_after_the_call_moved_on(
        traced: Traced) -> None:
    mod = traced.load("tasks", """
        import asyncio

        def leaf(x):
            return x

        def sibling():
            return leaf(0)

        async def child(tag):
            await asyncio.sleep(0)
            return leaf(tag)

        def spawn(loop, tasks, tag):
            tasks.append(loop.create_task(child(tag)))  # the copy is made here

        async def creator(tasks):
            loop = asyncio.get_running_loop()
            spawn(loop, tasks, 1)
            sibling()  # the creating context runs other calls before the task does
            spawn(loop, tasks, 2)
            return sibling()

        async def main():
            tasks = []
            await creator(tasks)
            return await asyncio.gather(*tasks)
    """, **KEEP_ALL)
    assert asyncio.run(mod.main()) == [1, 2]
    parents = _parents(traced)
    assert parents["child"] == ["spawn", "spawn"], parents
    assert parents["spawn"] == ["creator", "creator"], parents
    assert parents["sibling"] == ["creator", "creator"], parents
    assert sorted(parents["leaf"], key=str) == ["child", "child", "sibling", "sibling"]


def test_interleaved_tasks_keep_separate_chains(traced: Traced) -> None:
    mod = traced.load("interleave", """
        import asyncio

        def leaf(tag):
            return tag

        async def step(tag, i):
            await asyncio.sleep(0)  # the other task runs here
            return leaf(f"{tag}{i}")

        async def worker(tag):
            return [await step(tag, i) for i in range(3)]

        async def main():
            return await asyncio.gather(worker("a"), worker("b"))
    """, **KEEP_ALL)
    assert asyncio.run(mod.main()) == [["a0", "a1", "a2"], ["b0", "b1", "b2"]]
    spans = traced.spans()
    by_id = {span.context.span_id: span for span in spans}

    def tag_of(span: ReadableSpan) -> Any:
        """The worker a span descends from, by its argument."""
        node: ReadableSpan | None = span
        while node is not None and node.name != "worker":
            node = by_id.get(node.parent.span_id) if node.parent else None
        assert node is not None, f"{span.name} lost its worker"
        return (node.attributes or {}).get("code.function.parameters.tag.value")

    for span in spans:
        if span.name == "leaf":
            value = (span.attributes or {}).get("code.function.parameters.tag.value")
            assert value[0] == tag_of(span), (value, tag_of(span))
    assert _parents(traced)["step"] == ["worker"] * 6


def test_a_thread_with_a_copied_context_keeps_the_creating_call(traced: Traced) -> None:
    mod = traced.load("copies", """
        import contextvars, threading

        def leaf(x):
            return x

        def in_thread(started, go):
            started.set()
            go.wait(30)
            return leaf(1)

        def sibling():
            return leaf(0)

        def create(started, go, box):
            context = contextvars.copy_context()
            thread = threading.Thread(target=lambda: box.append(
                context.run(in_thread, started, go)))
            thread.start()
            return thread

        def main():
            started, go, box = threading.Event(), threading.Event(), []
            thread = create(started, go, box)
            started.wait(30)
            sibling()  # the creating context moves on while the thread waits
            go.set()
            thread.join(30)
            return box
    """, **KEEP_ALL)
    assert mod.main() == [1]
    parents = _parents(traced)
    assert parents["in_thread"] == ["create"], parents
    assert parents["sibling"] == ["main"], parents
    assert sorted(parents["leaf"], key=str) == ["in_thread", "sibling"], parents


def test_a_generator_resumed_in_another_task_and_thread(traced: Traced) -> None:
    mod = traced.load("resumed", """
        def leaf(x):
            return x

        def numbers():
            for i in range(3):
                yield leaf(i)

        def here(generator):
            return next(generator)

        def there(generator):
            return next(generator)

        def after():
            return leaf(9)
    """, **KEEP_ALL)

    async def other_task(generator: Any) -> Any:
        return mod.there(generator)

    async def main() -> list[Any]:
        generator = mod.numbers()
        got = [mod.here(generator)]
        got.append(await asyncio.get_running_loop().create_task(other_task(generator)))
        box: list[Any] = []
        thread = threading.Thread(target=lambda: box.append(mod.there(generator)))
        thread.start()
        thread.join(30)
        got.extend(box)
        got.append(mod.after())  # the resumptions left nothing current here
        generator.close()
        return got

    assert asyncio.run(main()) == [0, 1, 2, 9]
    parents = _parents(traced)
    assert parents["numbers"] == ["here"], parents  # its parent is where it first ran
    assert parents["leaf"] == ["after", "numbers", "numbers", "numbers"], parents
    assert parents["after"] == [None], parents
    assert parents["there"] == [None, None], parents


def test_the_consumers_calls_between_items_are_not_the_generators_children(
        traced: Traced) -> None:
    """Each yield makes the consumer's call current again, each resumption the
    generator's (``suspend`` / ``resume``, compiled in the compiled core)."""
    mod = traced.load("between", """
        def leaf(x):
            return x

        def numbers():
            for i in range(2):
                yield leaf(i)

        def consume():
            generator = numbers()
            got = [next(generator), leaf(10)]
            got.extend(generator)
            got.append(leaf(20))
            return got
    """, **KEEP_ALL)
    assert mod.consume() == [0, 10, 1, 20]
    parents = _parents(traced)
    assert parents["numbers"] == ["consume"], parents
    assert parents["leaf"] == ["consume", "consume", "numbers", "numbers"], parents


def test_an_exception_unwinding_through_several_calls_restores_the_chain(
        traced: Traced) -> None:
    mod = traced.load("unwind", """
        def leaf():
            raise KeyError("deep")

        def middle():
            return leaf()

        def top():
            try:
                return middle()
            finally:
                pass

        def handled():
            try:
                top()
            except KeyError:
                return after()

        def after():
            return 1
    """, **KEEP_ALL)
    assert mod.handled() == 1
    assert mod.after() == 1
    parents = _parents(traced)
    assert parents["after"] == [None, "handled"], parents
    assert parents["middle"] == ["top"] and parents["leaf"] == ["middle"], parents


def test_copies_made_in_a_loop_each_see_their_own_call(traced: Traced) -> None:
    """Many copies, each made inside a different call of the same context: every
    snapshot is its own (a store written in place would show them all the last one)."""
    mod = traced.load("snapshots", """
        import contextvars

        def leaf(i):
            return i

        def make(i, box):
            box.append((i, contextvars.copy_context()))
            return i

        def run_later(i):
            return leaf(i)
    """, **KEEP_ALL)
    box: list[Any] = []
    for i in range(5):
        mod.make(i, box)
    results = [context.run(mod.run_later, i) for i, context in box]
    assert results == list(range(5))
    spans = traced.spans()
    made = {(span.attributes or {})["code.function.parameters.i.value"]: span
            for span in spans if span.name == "make"}
    for span in spans:
        if span.name == "run_later":
            i = (span.attributes or {})["code.function.parameters.i.value"]
            assert span.parent is not None and span.parent.span_id == \
                made[i].context.span_id, i


def test_threads_hammering_one_copied_context_chain(traced: Traced) -> None:
    """Eight threads, each running a copy made inside the same traced call, calling
    traced functions concurrently: every leaf under its own thread's call."""
    mod = traced.load("hammer", """
        import contextvars, threading

        def leaf(n):
            return n

        def work(n):
            return sum(leaf(n) for _ in range(50))

        def fan_out():
            threads = [threading.Thread(target=contextvars.copy_context().run,
                                        args=(work, n)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            return len(threads)
    """, **KEEP_ALL)
    assert mod.fan_out() == 8
    parents = _parents(traced)
    assert parents["work"] == ["fan_out"] * 8
    assert parents["leaf"] == ["work"] * 400


def test_a_context_s_values_die_with_it_after_traced_calls_in_it(traced: Traced) -> None:
    """The current-call store keeps no context alive: once a context that ran traced
    calls is gone, the values set in it are freed as untraced (a collection ends the
    cycle the pure core's store and the compiled chain share with the map), not when
    some later call happens to run."""
    mod = traced.load("lifetimes", """
        def leaf(n):
            return n

        def body(var, value):
            var.set(value)
            return leaf(1) + leaf(2)
    """, min_duration="3600s")
    import contextvars
    import gc
    import weakref

    class Held:
        pass

    var: contextvars.ContextVar[Any] = contextvars.ContextVar("held")
    held = Held()
    ref = weakref.ref(held)
    context = contextvars.copy_context()
    assert context.run(mod.body, var, held) == 3
    del held, context
    gc.collect()
    assert ref() is None
