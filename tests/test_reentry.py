"""Foreign code inside the recorder never blocks it, deadlocks it or corrupts it (issue 18).

A real program once hung forever: the recorder held its own lock while the SDK
allocated, the garbage collector finalised an abandoned traced generator, and
that call's end asked for the same lock. ``reentry_program.py`` runs foreign
code at every point it can reach inside the recorder (span processors, an
exporter holding a lock, ``__del__``, weakref callbacks, the collector at almost
every allocation, a signal handler, threads sharing pending ancestors), once per
policy and backend, under a watchdog that dumps every thread's stack if it
stalls. The run must finish, compute what it computes untraced, and leave every
span started by autotrace ended exactly once under a parent that exists.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from .clihelp import AUTOTRACE, clean_env, write
from .conftest import BACKENDS

PROGRAM = Path(__file__).with_name("reentry_program.py")
WATCHDOG = 60  # seconds per scenario; only reached if something hangs (CI runs two suites at once)

MODULE = '''
def gen(n):
    for i in range(n):
        yield i

def work(x):
    return x + 1

def outer(n):
    total = 0
    for i in range(n):
        total += work(i)
    return total

class Holder:
    def __del__(self):
        work(3)

def _cyc(box):
    yield box
    yield 1

def cycle():
    box = []
    generator = _cyc(box)
    box.append(generator)
    next(generator)

def spawn(fn):
    fn()
    return 1

def shared_child(n):
    if n % 2:
        raise ValueError(n)
    return n
'''

#: Policies and their combinations; "all" ones keep every traced call as a span.
POLICIES: dict[str, tuple[dict[str, Any], bool]] = {
    "eager": ({}, True),
    "pending-all": ({"min_duration": "1ns"}, True),
    "min_duration": ({"min_duration": "1ms"}, False),
    "require_parent": ({"require_parent": True, "_root": True}, True),
    "max_depth": ({"max_depth": 2}, True),
    "metrics": ({"metrics": True}, True),
    "suppress_hot": ({"suppress_hot": True, "hot_calls": 20, "hot_duration": "1ms"}, False),
    "pending+parent+metrics": ({"min_duration": "1ms", "require_parent": True,
                                "metrics": True, "_root": True}, False),
    "hot+depth+metrics+pending": ({"suppress_hot": True, "hot_calls": 20,
                                   "hot_duration": "1ms", "max_depth": 3, "metrics": True,
                                   "min_duration": "1ns"}, False),
}


def _expected_outer_total(count: int) -> int:
    return sum(sum(x + 1 for x in range(i % 10)) for i in range(count))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("policy", list(POLICIES))
def test_foreign_code_inside_the_recorder(tmp_path: Path, backend: str, policy: str) -> None:
    options, keeps_all = POLICIES[policy]
    (tmp_path / "reentry_mod.py").write_text(textwrap.dedent(MODULE))
    env = {**os.environ, "REENTRY_WATCHDOG": str(WATCHDOG), "PYTHONHASHSEED": "0"}
    env.pop("OTEL_PYTHON_AUTOTRACE_BACKEND", None)
    done = subprocess.run(
        [sys.executable, str(PROGRAM), str(tmp_path), backend, json.dumps(options)],
        capture_output=True, text=True, env=env, timeout=WATCHDOG * 6)
    assert done.returncode == 0, (
        f"exit {done.returncode} (a watchdog dump below means it hung)\n{done.stderr[-6000:]}")
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # the program computed what it computes untraced
    assert report["hooks"] == _expected_outer_total(200)
    assert report["gc"] == _expected_outer_total(150)
    if report["signals"] != "skipped":
        assert report["signals"] == {"fired_enough": True, "total_ok": True}
    assert report["threads"] == sorted(["raised"] * 40 + [str(n) for n in (0, 2, 4, 6)] * 10)
    # every span ended exactly once, under a parent that exists
    assert report["started"] > 0
    assert report["never_ended"] == 0
    assert report["ended_twice"] == 0
    assert report["dangling_parents"] == []
    spans = report["spans"]
    if keeps_all:
        # each suspended generator made at top level is a span, ended though it was
        # finalised inside a span processor, an export or a collection
        assert spans.get("gen", 0) == report["buried"], spans
        assert spans.get("spawn", 0) == 10, spans
    # a kept child's ancestors are kept with it: one span per spawn call at most
    assert spans.get("spawn", 0) <= 10


@pytest.mark.skipif(not hasattr(signal, "SIGQUIT"), reason="no SIGQUIT on this platform")
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigquit_prints_every_threads_stack_then_quits_as_before(tmp_path: Path,
                                                                  backend: str) -> None:
    """A program that seems hung under the command says where each thread is."""
    write(tmp_path, "stuckmod.py", """
        import threading, time

        def wait_forever(flag):
            print("waiting", flush=True)
            threading.Event().wait()

        def helper_thread(ready):
            ready.set()
            threading.Event().wait()
    """)
    write(tmp_path, "prog.py", """
        import threading, stuckmod
        ready = threading.Event()
        threading.Thread(target=stuckmod.helper_thread, args=(ready,), daemon=True).start()
        ready.wait()
        stuckmod.wait_forever(1)
    """)
    # SIGQUIT at its default action, whatever this process inherited: a shell's
    # background job has it ignored, and then the program would not quit untraced either.
    default_sigquit = [sys.executable, "-c", "import os, signal, sys; "
                       "signal.signal(signal.SIGQUIT, signal.SIG_DFL); "
                       "os.execv(sys.argv[1], sys.argv[1:])"]
    process = subprocess.Popen(
        [*default_sigquit, *AUTOTRACE, "-p", "stuckmod", "--backend", backend,
         sys.executable, "prog.py"],
        cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "waiting"
        process.send_signal(signal.SIGQUIT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGQUIT  # what SIGQUIT does untraced
    assert "wait_forever" in stderr and "helper_thread" in stderr, stderr
    assert "Current thread 0x" in stderr and stderr.count("Thread 0x") >= 1, stderr


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the collection rule is for < 3.12")
@pytest.mark.parametrize("backend", BACKENDS)
def test_traced_code_run_by_the_collectors_callbacks_sets_no_context(
        tmp_path: Path, backend: str, core: str) -> None:
    """CPython < 3.12 (gh-148891): a ContextVar set while the collector runs inside
    another one loses the outer one's update, or crashes. Traced code that the
    collector's callbacks run (the program's own, added before or after autotrace's,
    or a signal handler inside one) is left untraced; the program's own span, whose
    context the collection was allocating, detaches as untraced."""
    write(tmp_path, "gcmod.py", """
        def work(x):
            return x + 1
    """)
    write(tmp_path, "prog.py", """
        import gc, json, sys
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter)
        import autotrace

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        autotrace.install(["gcmod"], backend=sys.argv[1], tracer_provider=provider)
        import gcmod

        results = []
        def inside(phase, info):
            results.append(gcmod.work(len(results)))
        gc.callbacks.insert(0, inside)  # added after autotrace: before its first marker
        gc.callbacks.append(inside)     # and after its last one
        gc.collect()  # the first collection moves autotrace's markers outside them
        first = len(exporter.get_finished_spans())
        exporter.clear()
        with provider.get_tracer("program").start_as_current_span("root"):
            gc.collect()
            gcmod.work(0)  # outside a collection: traced
        gc.callbacks.remove(inside)
        gc.callbacks.remove(inside)
        names = [span.name for span in exporter.get_finished_spans()]
        print(json.dumps({"first": first, "names": names, "results": results}))
    """)
    done = subprocess.run(
        [sys.executable, "prog.py", backend], cwd=tmp_path, capture_output=True, text=True,
        env=clean_env(OTEL_PYTHON_AUTOTRACE_CORE=core), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "detach" not in done.stderr, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["results"] == [1, 2, 3, 4, 5, 6, 7, 8]  # the callbacks ran, unchanged
    # the first collection: only the callback placed before autotrace's first marker, at
    # the start, ran before autotrace could know; after it, none
    assert report["first"] <= 1
    assert report["names"] == ["work", "root"]


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the collection rule is for < 3.12")
def test_other_threads_stay_traced_while_a_collection_starts(
        tmp_path: Path, core: str, request: pytest.FixtureRequest) -> None:
    """The collecting thread is noted with the first marker, in one C call: a thread
    switch between the two let another thread run with an earlier collection's thread
    noted, and its calls went untraced (~1% of 20,000 calls here). Without the
    extension (``OTEL_PYTHON_AUTOTRACE_CORE=python``) the marker is a C method and the
    thread is noted by a Python callback after it: that gap stays (documented)."""
    if core == "python":
        request.applymarker(pytest.mark.xfail(
            reason="without the extension the thread is noted after the marker moves"))
    write(tmp_path, "gcthreads.py", """
        def work(x):
            return x + 1
    """)
    write(tmp_path, "prog.py", """
        import gc, sys, threading
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        import autotrace

        class Count(SpanProcessor):
            ended = 0
            def on_end(self, span):
                Count.ended += 1

        provider = TracerProvider()
        provider.add_span_processor(Count())
        autotrace.install(["gcthreads"], tracer_provider=provider)
        import gcthreads

        sys.setswitchinterval(1e-5)  # a switch at nearly every chance
        gc.set_threshold(50)  # a collection every few calls, on every thread
        def run():
            for i in range(5000):
                gcthreads.work(i)
        threads = [threading.Thread(target=run) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(Count.ended)
    """)
    done = subprocess.run(
        [sys.executable, "prog.py"], cwd=tmp_path, capture_output=True, text=True,
        env=clean_env(OTEL_PYTHON_AUTOTRACE_CORE=core), timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["20000"]
