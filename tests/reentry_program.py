"""A program that runs foreign code inside the recorder at every point it can (issue 18).

Run by ``test_reentry.py`` in a subprocess, one policy and backend per run:
``python reentry_program.py MODULE_DIR BACKEND POLICY_JSON``. A watchdog
(``faulthandler.dump_traceback_later``) kills it with every thread's stack if a
scenario stops making progress, so a deadlock fails in seconds. It prints one
JSON report: per scenario, what the program computed and what the spans say.

What runs inside the recorder:
- a span processor whose ``on_start``/``on_end`` drop the last reference to a
  suspended traced generator (finalised there and then), call a traced function,
  run a ``__del__`` and a weakref callback that call traced functions;
- an exporter that holds a plain ``Lock`` while it exports (as real exporters do)
  and does the same meddling inside ``export``;
- the garbage collector at nearly every allocation (``gc.set_threshold(1)``),
  collecting cycles that hold suspended traced generators;
- a signal handler (``setitimer``) that calls traced code and drops generators;
- threads that share pending ancestors through copied contexts.
"""

from __future__ import annotations

import contextvars
import faulthandler
import gc
import importlib
import json
import os
import signal
import sys
import threading
import time
import weakref
from collections import Counter
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import autotrace

WATCHDOG = float(os.environ.get("REENTRY_WATCHDOG", "20"))

module_dir, backend, policy_text = sys.argv[1], sys.argv[2], sys.argv[3]
policy: dict[str, Any] = json.loads(policy_text)
sys.path.insert(0, module_dir)

#: Suspended traced generators waiting to be dropped from inside the recorder.
graveyard: list[Any] = []
mod: Any = None


def meddle() -> None:
    """Foreign code that re-enters the recorder: runs wherever the SDK calls out."""
    if graveyard:
        graveyard.pop()  # the last reference: the generator is finalised right here
    mod.work(2)
    holder = mod.Holder()
    del holder  # __del__ calls a traced function
    ref_target = mod.Holder()
    weakref.ref(ref_target, lambda _ref: mod.work(4))
    del ref_target


class Meddler(SpanProcessor):
    """Meddles in every span start and end; also tracks that every span ends once."""

    def __init__(self) -> None:
        self.open: set[int] = set()
        self.started = 0
        self.ended: Counter[int] = Counter()

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.open.add(span.context.span_id)
        self.started += 1
        meddle()

    def on_end(self, span: ReadableSpan) -> None:
        self.open.discard(span.context.span_id)
        self.ended[span.context.span_id] += 1
        meddle()


class LockingExporter(SpanExporter):
    """Holds a plain lock while exporting, as exporters do, and meddles meanwhile."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Any) -> SpanExportResult:
        with self.lock:
            meddle()
            self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


buried = [0]


def bury(count: int) -> None:
    """Suspended traced generators, for the meddlers to drop."""
    buried[0] += count
    for _ in range(count):
        generator = mod.gen(5)
        next(generator)
        graveyard.append(generator)


def scenario_hooks() -> Any:
    total = 0
    for i in range(200):
        bury(3)
        total += mod.outer(i % 10)
    return total


def scenario_gc() -> Any:
    old = gc.get_threshold()
    gc.set_threshold(1)
    try:
        total = 0
        for i in range(150):
            mod.cycle()  # a suspended traced generator in a reference cycle
            bury(1)
            total += mod.outer(i % 10)
        return total
    finally:
        gc.set_threshold(*old)


def scenario_signals() -> Any:
    if not hasattr(signal, "setitimer"):
        return "skipped"
    fired = [0]

    def handler(signum: int, frame: Any) -> None:
        fired[0] += 1
        mod.work(5)
        if graveyard:
            graveyard.pop()
        mod.cycle()

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)
    try:
        total = 0
        deadline = time.monotonic() + 0.6
        i = 0
        while time.monotonic() < deadline or fired[0] < 20:
            bury(1)
            total += mod.outer(i % 50)
            i += 1
        return {"fired_enough": fired[0] >= 20, "total_ok": total == sum(
            sum(x + 1 for x in range(k % 50)) for k in range(i))}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)


def scenario_threads() -> Any:
    results: list[Any] = []

    def worker(n: int) -> None:
        try:
            results.append(mod.shared_child(n))
        except ValueError:
            results.append("raised")

    def parent() -> None:
        threads = [threading.Thread(target=contextvars.copy_context().run, args=(worker, n))
                   for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    for _ in range(10):
        mod.spawn(parent)
    return sorted(map(str, results))


def main() -> None:
    global mod
    faulthandler.dump_traceback_later(WATCHDOG, exit=True)
    meddler = Meddler()
    exporter = LockingExporter()
    provider = TracerProvider()
    provider.add_span_processor(meddler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    options = dict(policy)
    root_needed = options.pop("_root", False)
    autotrace.install(["reentry_mod*"], backend=backend, tracer_provider=provider, **options)
    mod = importlib.import_module("reentry_mod")
    tracer = provider.get_tracer("program")
    report: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    report["seconds"] = seconds
    only = os.environ.get("REENTRY_SCENARIOS", "hooks,gc,signals,threads").split(",")
    for name, scenario in (("hooks", scenario_hooks), ("gc", scenario_gc),
                           ("signals", scenario_signals), ("threads", scenario_threads)):
        if name not in only:
            report[name] = "skipped"
            continue
        faulthandler.dump_traceback_later(WATCHDOG, exit=True)  # per scenario
        began = time.monotonic()
        if root_needed:
            with tracer.start_as_current_span(f"root-{name}"):
                report[name] = scenario()
        else:
            report[name] = scenario()
        seconds[name] = round(time.monotonic() - began, 2)
    graveyard.clear()
    gc.collect()
    # Ends queued inside a collection (Python < 3.12 sets no ContextVar there) wait for a
    # safe point: the next kept call, uninstall() or exit. uninstall() is the last here.
    autotrace.uninstall()
    faulthandler.cancel_dump_traceback_later()
    spans = exporter.spans
    ids = {span.context.span_id for span in spans}
    report["spans"] = Counter(span.name.rsplit(".", 1)[-1] for span in spans)
    report["started"] = meddler.started
    report["never_ended"] = len(meddler.open)
    report["ended_twice"] = sum(1 for count in meddler.ended.values() if count > 1)
    report["dangling_parents"] = sorted({span.name for span in spans if span.parent is not None
                                         and span.parent.span_id not in ids})
    report["buried"] = buried[0]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
