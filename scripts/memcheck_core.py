"""Exercise every path of the compiled core under ``valgrind --tool=memcheck``.

    PYTHONMALLOC=malloc valgrind --tool=memcheck --error-exitcode=99 --leak-check=no \\
        python scripts/memcheck_core.py

Each backend the interpreter has, each policy: calls dropped, kept, raised (handled
and escaping), refused (``require_parent``), deeper than ``max_depth``, metrics,
generators and coroutines (started, stepped and abandoned), methods and properties,
threads, a finaliser that runs traced code, the current span asked for and a context
left attached inside a pending call, more functions than a first table holds, and
uninstall with calls in flight. Each install imports the module again, so its defs are
wrapped by the compiled decorator (``_core.Definer``, wrapt) or registered in C
(``backends/_monitoring.c``, monitoring) each time.
memcheck reports any invalid read, write or free in ``_core.c`` or ``_monitoring.c``
(exit 99); the program
checks its own results (exit 1). Small counts: memcheck runs Python about fifty times
slower.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import autotrace
from autotrace.record import accel

MODULE = """
import time

class Boom(Exception):
    pass

def add(a, b):
    return a + b

def fail(value):
    raise Boom(value)

def slow(x):
    time.sleep(0.003)
    return add(x, 1)

def handles(value):
    try:
        fail(value)
    except Boom:
        return -1

def escapes(value):
    return fail(value)

def deep(n):
    return 0 if n == 0 else deep(n - 1) + 1

def gen(n):
    for i in range(n):
        yield add(i, i)

async def coro(n):
    return add(n, n)

def thrown(n):
    g = gen(n + 2)
    first = next(g)
    try:
        g.throw(Boom(n))  # PY_THROW into the generator, then PY_UNWIND out of it
    except Boom:
        return first + 1
    return first

def abandon(n):
    g = gen(n)
    first = next(g)
    del g  # ended by its frame's sentinel (monitoring) or the driver's close (wrapt)
    return first

class Shape:
    def __init__(self, side):
        self.side = side

    def area(self):
        return add(self.side, self.side)

    @property
    def double(self):
        return self.area() * 2

class Finalised:
    def __del__(self):
        add(1, 2)

def churn(n):
    for i in range(n):
        Finalised()
    return n

def copies(n):
    import contextvars, threading
    context = contextvars.copy_context()  # a chain shared with a copy, then frozen
    add(n, 1)
    thread = threading.Thread(target=context.run, args=(add, n, 2))
    thread.start()
    thread.join()
    return context.run(add, n, 3)

async def spawn(n):
    import asyncio
    task = asyncio.get_running_loop().create_task(coro(n))
    add(n, 0)
    return await task

def asks(n):  # a pending call's context, shown to OpenTelemetry: made real when asked
    from opentelemetry import trace
    trace.get_current_span().get_span_context()
    return add(n, 1)

def leaves(n):  # a context attached and left: undone when the call ends
    from opentelemetry import context
    context.attach(context.set_value("memcheck", n))
    return add(n, 1)

def many():  # more functions than the monitoring callbacks' first table holds
    return sum(globals()[f"many_{i}"](i) for i in range(80))
""" + "".join(f"\ndef many_{i}(x):\n    return x + {i}\n" for i in range(80))

POLICIES = [{}, {"min_duration": 0.002}, {"min_duration": 0.002, "metrics": True},
            {"require_parent": True}, {"max_depth": 3, "min_duration": 0.002},
            {"spans": False, "metrics": True}]


def exercise(mod: object, rounds: int) -> int:
    m: object = mod
    total = 0
    for i in range(rounds):
        total += m.add(i, 1)  # type: ignore[attr-defined]
        total += m.handles(i)  # type: ignore[attr-defined]
        try:
            m.escapes(i)  # type: ignore[attr-defined]
        except m.Boom:  # type: ignore[attr-defined]
            total += 1
        total += m.deep(6)  # type: ignore[attr-defined]
        total += sum(m.gen(3))  # type: ignore[attr-defined]
        total += m.abandon(3)  # type: ignore[attr-defined]
        total += m.thrown(i)  # type: ignore[attr-defined]
        total += m.Shape(i).double + m.Shape.area(m.Shape(1))  # type: ignore[attr-defined]
        total += asyncio.run(m.coro(i)) if i % 10 == 0 else 0  # type: ignore[attr-defined]
        total += m.churn(2)  # type: ignore[attr-defined]
        total += m.copies(i)  # type: ignore[attr-defined]
        total += m.asks(i) + m.leaves(i)  # type: ignore[attr-defined]
        total += m.many() if i % 5 == 0 else 0  # type: ignore[attr-defined]
        total += asyncio.run(m.spawn(i)) if i % 10 == 5 else 0  # type: ignore[attr-defined]
    total += m.slow(1)  # type: ignore[attr-defined]
    gc.collect()
    return total


def main() -> int:
    if accel.extension is None:
        print(f"memcheck_core: the compiled core is not here ({accel.why_not})")
        return 1
    root = Path(tempfile.mkdtemp())
    (root / "memmod.py").write_text(textwrap.dedent(MODULE))
    sys.path.insert(0, str(root))
    backends = ["wrapt"] + (["monitoring"] if sys.version_info >= (3, 12) else [])
    expected = None
    for backend in backends:
        for policy in POLICIES:
            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            inst = autotrace.install(["memmod"], backend=backend, core="compiled",
                                     tracer_provider=provider, **policy)  # type: ignore[arg-type]
            sys.modules.pop("memmod", None)
            import memmod

            total = exercise(memmod, 15)
            with provider.get_tracer("memcheck").start_as_current_span("request"):
                total += exercise(memmod, 15)  # under a parent (require_parent)
            threads = [threading.Thread(target=exercise, args=(memmod, 10)) for _ in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            inst.uninstall()
            provider.shutdown()
            if expected is None:
                expected = total
            if total != expected:
                print(f"memcheck_core: {backend} {policy}: {total} != {expected}")
                return 1
            print(f"memcheck_core: {backend} {policy}: {len(exporter.get_finished_spans())} "
                  "spans, results as untraced")
    return 0


if __name__ == "__main__":
    sys.exit(main())
