"""Faults and bad input never reach the traced program.

Faults inside autotrace are logged once. Exporters that raise or hang, arguments
whose repr raises, recurses, is huge or slow, hostile objects, ``os.fork()`` in a
traced call, a signal handler calling traced code during an export, and
KeyboardInterrupt/SystemExit: results and exceptions stay what they are untraced,
spans end exactly once, attribute values stay bounded, and secrets never reach an
exporter in clear text. Process-level faults (fork, signals) run in a subprocess
with a generous timeout, so a deadlock fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

import autotrace
from autotrace import _log

from .conftest import Traced

WAIT = 120  # seconds; only ever reached if something hangs

SOURCE = '''
def traced_fn(x):
    return x + 1

def raises_traced():
    raise ValueError("v")
'''


@pytest.fixture(autouse=True)
def _fresh_log_once() -> None:
    _log._seen.clear()


class _BrokenTracer:
    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tracer exploded")


class _BrokenProvider:
    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        return _BrokenTracer()


def test_internal_failure_never_reaches_user_code(traced: Traced, caplog: Any) -> None:
    """Both backends: a tracer that raises leaves results and exceptions unchanged."""
    mod = traced.load("mod", SOURCE, tracer_provider=_BrokenProvider())
    with caplog.at_level("WARNING", logger="autotrace"):
        for _ in range(3):
            assert mod.traced_fn(1) == 2
            with pytest.raises(ValueError, match="v"):
                mod.raises_traced()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "runs untraced" in warnings[0].getMessage()


def test_a_function_that_cannot_be_described_runs_untraced(
        traced: Traced, caplog: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure of autotrace's own (here: describing the function, done at its first
    call) never reaches the call: plain functions, generators and coroutines."""
    import asyncio

    from autotrace.describe.function import Formatter

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("describe exploded")

    monkeypatch.setattr(Formatter, "describe_function", explode)
    monkeypatch.setattr(Formatter, "describe_code", explode)
    mod = traced.load("mod", """
def plain(x):
    return x + 1

def gen(n):
    yield from range(n)

async def coro(x):
    return x * 2
""")
    with caplog.at_level("WARNING", logger="autotrace"):
        for _ in range(2):
            assert mod.plain(1) == 2
            assert list(mod.gen(3)) == [0, 1, 2]
            assert asyncio.run(mod.coro(4)) == 8
    assert traced.spans() == []
    assert any("runs untraced" in r.getMessage() for r in caplog.records)


class _GetTracerFails:
    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no tracer for you")


def test_a_provider_that_cannot_make_a_tracer_leaves_calls_untraced(traced: Traced,
                                                                    caplog: Any) -> None:
    with caplog.at_level("WARNING", logger="autotrace"):
        mod = traced.load("mod", SOURCE, tracer_provider=_GetTracerFails())
        assert mod.traced_fn(1) == 2
        with pytest.raises(ValueError, match="v"):
            mod.raises_traced()
    assert any("could not make a tracer" in r.getMessage() for r in caplog.records)


class _RaisingHandler(logging.Handler):
    def handle(self, record: logging.LogRecord) -> bool:
        raise RuntimeError("the log handler exploded")


def test_a_log_handler_that_raises_never_reaches_user_code(traced: Traced) -> None:
    """autotrace logs its own faults; a broken handler must not turn that into one."""
    handler = _RaisingHandler()
    logger = logging.getLogger("autotrace")
    logger.addHandler(handler)
    try:
        mod = traced.load("mod", SOURCE, tracer_provider=_BrokenProvider())
        assert mod.traced_fn(1) == 2
        with pytest.raises(ValueError, match="v"):
            mod.raises_traced()
    finally:
        logger.removeHandler(handler)


class _FlakySpan:
    """A real span whose recording methods raise; ``end`` works."""

    def __init__(self, span: Any) -> None:
        self._span = span

    def __getattr__(self, name: str) -> Any:
        return getattr(self._span, name)

    def set_attribute(self, *args: Any) -> None:
        raise RuntimeError("set_attribute exploded")

    def set_status(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("set_status exploded")


class _FlakyProvider:
    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        tracer = self._provider.get_tracer(*args, **kwargs)

        class FlakyTracer:
            def start_span(self, *a: Any, **k: Any) -> Any:
                return _FlakySpan(tracer.start_span(*a, **k))

        return FlakyTracer()


def test_a_span_that_fails_to_record_still_ends(traced: Traced) -> None:
    """Recording the return value or the exception failed: the span must still end
    (it used to stay open forever, and never reach the exporter)."""
    mod = traced.load("mod", SOURCE, tracer_provider=_FlakyProvider(traced.provider))
    assert mod.traced_fn(1) == 2
    with pytest.raises(ValueError, match="v"):
        mod.raises_traced()
    assert sorted(traced.names()) == ["raises_traced", "traced_fn"]
    assert trace.get_current_span() is trace.INVALID_SPAN


# -- exporters that raise or hang ------------------------------------------------------------

CALLS = '''
def work(i):
    return i * 2

def fails(i):
    raise KeyError(i)
'''


class _RaisingExporter(SpanExporter):
    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        raise RuntimeError("exporter exploded")


class _HangingExporter(SpanExporter):
    """Blocks every export until released; records that an export is in progress."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(WAIT)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


def _provider(exporter: SpanExporter, batch: bool) -> TracerProvider:
    provider = TracerProvider()
    if batch:
        provider.add_span_processor(BatchSpanProcessor(
            exporter, max_queue_size=64, max_export_batch_size=16, schedule_delay_millis=1))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _run_bounded(target: Any) -> Any:
    """Run ``target`` in a thread; fail (not hang) if it does not finish."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = target()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), "the traced program hung"
    if "error" in box:
        raise box["error"]
    return box["result"]


@pytest.mark.parametrize("batch", [False, True], ids=["simple-processor", "batch-processor"])
def test_an_exporter_that_raises_changes_no_result(traced: Traced, batch: bool) -> None:
    exporter = _RaisingExporter()
    provider = _provider(exporter, batch)
    mod = traced.load("mod", CALLS, tracer_provider=provider)

    def program() -> list[Any]:
        out: list[Any] = [mod.work(i) for i in range(200)]
        for i in range(20):
            try:
                mod.fails(i)
            except KeyError as exc:
                out.append(exc.args)
        return out

    assert _run_bounded(program) == [i * 2 for i in range(200)] + [(i,) for i in range(20)]
    provider.force_flush(WAIT * 1000)
    assert exporter.calls > 0, "the exporter was never called: the test proves nothing"
    provider.shutdown()


def test_an_exporter_that_hangs_behind_a_batch_processor_blocks_nothing(
        traced: Traced) -> None:
    """The queue fills and drops spans; the program never waits for the exporter."""
    exporter = _HangingExporter()
    provider = _provider(exporter, batch=True)
    mod = traced.load("mod", CALLS, tracer_provider=provider)
    try:
        result = _run_bounded(lambda: [mod.work(i) for i in range(2000)])
        assert result == [i * 2 for i in range(2000)]
        assert exporter.entered.wait(WAIT), "the exporter was never called"
    finally:
        exporter.release.set()
        provider.shutdown()


def test_an_exporter_that_hangs_behind_a_simple_processor_delays_but_keeps_results(
        traced: Traced) -> None:
    """The SDK's SimpleSpanProcessor exports inside ``span.end()``: the traced call
    waits for the exporter exactly as a hand-written span would (autotrace adds no
    timeout and no thread). What autotrace promises: the body ran once, the result
    comes back intact when the exporter returns, and nothing deadlocks."""
    exporter = _HangingExporter()
    provider = _provider(exporter, batch=False)
    mod = traced.load("mod", CALLS + "\nran = []\ndef body(i):\n    ran.append(i)\n"
                      "    return i + 1\n", tracer_provider=provider)
    box: dict[str, Any] = {}
    caller = threading.Thread(target=lambda: box.setdefault("result", mod.body(41)))
    caller.start()
    assert exporter.entered.wait(WAIT), "the exporter was never called"
    assert mod.ran == [41], "the body must have run, once, before the export"
    assert "result" not in box  # still inside span.end(): the SDK's synchronous export
    exporter.release.set()
    caller.join(WAIT)
    assert not caller.is_alive() and box["result"] == 42
    assert mod.ran == [41] and exporter.exported == 1
    provider.shutdown()


def test_traced_code_called_by_an_exporter_is_not_traced(traced: Traced) -> None:
    """An exporter that calls into traced code neither recurses nor records it."""
    captured: list[ReadableSpan] = []
    holder: dict[str, Any] = {}

    class CallingExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            captured.extend(spans)
            holder["mod"].work(-1)  # traced code, from inside the export
            return SpanExportResult.SUCCESS

    mod = traced.load("mod", CALLS, tracer_provider=_provider(CallingExporter(), False))
    holder["mod"] = mod
    assert [mod.work(i) for i in range(5)] == [0, 2, 4, 6, 8]
    assert [s.name for s in captured] == ["work"] * 5


# -- arguments: repr that raises, recurses, is huge or slow ----------------------------------

REPRS = '''
class Raises:
    def __repr__(self):
        raise RuntimeError("repr exploded")

class Recurses:
    def __repr__(self):
        return repr(self)

class Huge:
    def __repr__(self):
        return "h" * 10_000_000

class Slow:
    """Stands for a repr that is slow or has side effects (a lazy ORM query)."""
    runs = 0
    def __repr__(self):
        Slow.runs += 1
        return "slow"

def echo(value):
    return value
'''

MAX = 64


def _bounded(attrs: dict[str, Any]) -> None:
    """Every rendered value (parameters, return value) within ``max_value_length``."""
    for key, value in attrs.items():
        if key.startswith("code.function.") and key.endswith(".value") and isinstance(value,
                                                                                      str):
            assert len(value) <= MAX, f"{key}: {len(value)} characters"


@pytest.mark.parametrize("repr_objects", [False, True], ids=["safe-render", "repr-objects"])
def test_arguments_whose_repr_misbehaves(traced: Traced, repr_objects: bool) -> None:
    mod = traced.load("mod", REPRS, repr_objects=repr_objects, max_value_length=MAX)
    for cls in (mod.Raises, mod.Recurses, mod.Huge, mod.Slow):
        obj = cls()
        assert mod.echo(obj) is obj
    spans = traced.spans()
    assert len(spans) == 4
    rendered = [dict(s.attributes or {}) for s in spans]
    for attrs in rendered:
        _bounded(attrs)
    values = [a["code.function.parameters.value.value"] for a in rendered]
    if repr_objects:
        assert values[0] == f"<{mod.__name__}.Raises object (repr failed: RuntimeError)>"
        assert values[1] == f"<{mod.__name__}.Recurses object (repr failed: RecursionError)>"
        assert values[2] == "h" * (MAX - 1) + "…"
        assert values[3] == "slow" and mod.Slow.runs == 2  # documented: not time-bounded
    else:
        assert values == [f"<{mod.__name__}.{n} object>"
                          for n in ("Raises", "Recurses", "Huge", "Slow")]
        assert mod.Slow.runs == 0, "a user __repr__ ran although repr_objects=False"


def test_a_repr_calling_traced_code_is_not_traced(traced: Traced) -> None:
    """repr_objects=True runs user reprs while autotrace renders; a repr that calls a
    traced function with the same object would recurse without the re-entry guard."""
    mod = traced.load("mod", REPRS + '''
class Loop:
    def __repr__(self):
        return "Loop" + str(echo(self) is self)
''', repr_objects=True, max_value_length=MAX)
    obj = mod.Loop()
    assert mod.echo(obj) is obj
    assert traced.names() == ["echo"]
    assert traced.args("echo") == {"value": "LoopTrue"}


def test_huge_arguments_cost_a_bounded_attribute(traced: Traced) -> None:
    mod = traced.load("mod", REPRS, max_value_length=MAX)
    nested: list[Any] = []
    for _ in range(5000):
        nested = [nested]
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    values = ["s" * 10_000_000, b"b" * 10_000_000, list(range(1_250_000)),
              {i: str(i) for i in range(200_000)}, 10 ** 5000, nested, cyclic,
              frozenset(range(100_000)), ("t",) * 1_000_000]
    for value in values:
        assert mod.echo(value) is value
    spans = traced.spans()
    assert len(spans) == len(values)
    for span in spans:
        _bounded(dict(span.attributes or {}))


# -- hostile objects ------------------------------------------------------------------------

HOSTILE = '''
import dataclasses

calls = []

def _log(what):
    import traceback
    calls.append((what, traceback.format_stack(limit=8)))
    raise RuntimeError("hostile " + what)

class Hostile:
    def __getattr__(self, name): return _log("__getattr__ " + name)
    def __eq__(self, other): return _log("__eq__")
    def __hash__(self): return _log("__hash__")
    def __len__(self): return _log("__len__")
    def __iter__(self): return _log("__iter__")
    def __bool__(self): return _log("__bool__")
    def __repr__(self): return _log("__repr__")
    def __str__(self): return _log("__str__")
    def __format__(self, spec): return _log("__format__")

class VeryHostile(Hostile):
    def __getattribute__(self, name): return _log("__getattribute__ " + name)

class HostileList(list):
    def __iter__(self): return _log("list.__iter__")
    def __len__(self): return _log("list.__len__")
    def __getitem__(self, i): return _log("list.__getitem__")
    def __repr__(self): return _log("list.__repr__")

class HostileDict(dict):
    def __iter__(self): return _log("dict.__iter__")
    def keys(self): return _log("dict.keys")
    def items(self): return _log("dict.items")
    def __getitem__(self, k): return _log("dict.__getitem__")
    def __len__(self): return _log("dict.__len__")
    def __repr__(self): return _log("dict.__repr__")

class HostileStr(str):
    def __getitem__(self, i): return _log("str.__getitem__")
    def __len__(self): return _log("str.__len__")
    def __repr__(self): return _log("str.__repr__")
    def __str__(self): return _log("str.__str__")

class HostileInt(int):
    def __repr__(self): return _log("int.__repr__")
    def __str__(self): return _log("int.__str__")
    def __index__(self): return _log("int.__index__")

class Meta(type):
    @property
    def __module__(cls): return _log("Meta.__module__")

class HostileMeta(metaclass=Meta):
    pass

@dataclasses.dataclass
class Fields:
    a: object
    b: object = None

def echo(value, *rest, **named):
    return value

def give_back(value):
    return [value, {"k": value}]
'''


def _hostile_values(mod: Any) -> list[Any]:
    deep = mod.HostileList([1])
    for _ in range(6):  # deeper than the renderer walks: its size is shown
        deep = mod.HostileList([deep])
    return [
        mod.Hostile(), mod.VeryHostile(), mod.HostileList([1, mod.Hostile()]),
        mod.HostileDict({"a": 1, "password": mod.Hostile()}), mod.HostileStr("x" * 500),
        mod.HostileInt(7), mod.HostileMeta(), mod.Fields(mod.Hostile(), mod.HostileList([2])),
        [mod.Hostile(), (mod.VeryHostile(),)], {mod.HostileStr("k"): mod.HostileDict()},
        deep,
    ]


@pytest.mark.parametrize("repr_objects", [False, True], ids=["safe-render", "repr-objects"])
def test_hostile_objects_as_arguments_and_results(traced: Traced, repr_objects: bool) -> None:
    mod = traced.load("mod", HOSTILE, repr_objects=repr_objects, max_value_length=MAX)
    values = _hostile_values(mod)
    for value in values:
        assert mod.echo(value, value, key=value) is value
        back = mod.give_back(value)
        assert back[0] is value and back[1]["k"] is value
    spans = traced.spans()
    assert len(spans) == 2 * len(values)
    for span in spans:
        attrs = dict(span.attributes or {})
        assert "code.function.return.value" in attrs
        _bounded(attrs)
    if not repr_objects:
        assert mod.calls == [], f"user code ran while rendering: {mod.calls}"
    else:  # a repr that raises is reported, never propagated
        for span in spans:
            assert span.status.is_ok


def test_a_hostile_exception_class_passes_through_and_its_span_ends(traced: Traced) -> None:
    """An exception whose class has a hostile metaclass: recording it failed, the
    logging of that failure raised too, and the user saw a RuntimeError instead of
    their exception; the span was never ended."""
    mod = traced.load("mod", HOSTILE + '''
class HostileError(Exception, metaclass=Meta):
    pass

class Meta2(type):
    @property
    def __name__(cls): return _log("Meta2.__name__")

class HostileError2(Exception, metaclass=Meta2):
    pass

def fail(which):
    raise (HostileError if which == 1 else HostileError2)("boom")
''')
    for which, cls in ((1, mod.HostileError), (2, mod.HostileError2)):
        with pytest.raises(cls) as info:
            mod.fail(which)
        assert type(info.value) is cls
    spans = traced.spans()
    assert [s.name for s in spans] == ["fail", "fail"]
    assert all(not s.status.is_ok for s in spans)


def test_a_module_with_a_hostile_class_is_still_traced(traced: Traced) -> None:
    mod = traced.load("mod", HOSTILE)
    assert mod.echo(1) == 1
    assert traced.names() == ["echo"]


# -- os.fork() inside a traced call ---------------------------------------------------------

FORK_MODULE = '''
import os

def inside(who):
    return who

def after_fork(who):
    return who

def forker():
    pid = os.fork()
    inside("child" if pid == 0 else "parent")
    return pid
'''

FORK_SCRIPT = '''
import json, os, sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
import autotrace

backend, out, module = sys.argv[1:4]

class FileExporter(SpanExporter):
    def export(self, spans):
        with open(out, "a") as fh:
            for s in spans:
                fh.write(json.dumps({
                    "pid": os.getpid(), "name": s.name, "span_id": s.context.span_id,
                    "parent": s.parent.span_id if s.parent else None}) + "\\n")
        return SpanExportResult.SUCCESS

provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(FileExporter()))
autotrace.install([module], backend=backend, tracer_provider=provider)
mod = __import__(module)
pid = mod.forker()  # returns twice: in the parent and in the child
if pid == 0:
    mod.after_fork("child")
    sys.exit(0)  # a normal exit: atexit handlers and provider shutdown run
_, status = os.waitpid(pid, 0)
mod.after_fork("parent")
sys.exit(os.waitstatus_to_exitcode(status))
'''


def _run_script(script: str, args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", script, *args], env=env, text=True,
                          capture_output=True, timeout=WAIT)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_inside_a_traced_call_exports_the_span_once(traced: Traced, tmp_path: Path) -> None:
    name = traced.modules.module("forkmod", FORK_MODULE)
    out = tmp_path / "spans.jsonl"
    proc = _run_script(FORK_SCRIPT, [traced.backend, str(out), name], traced.modules.root)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    parent_pid = next(r["pid"] for r in rows if r["name"] == "forker")
    forker = [r for r in rows if r["name"] == "forker"]
    assert len(forker) == 1, f"the forked call's span was exported {len(forker)} times"
    inside = [r for r in rows if r["name"] == "inside"]
    after = [r for r in rows if r["name"] == "after_fork"]
    assert len(inside) == 2 and len(after) == 2
    assert {r["pid"] for r in inside} == {r["pid"] for r in after} == {
        parent_pid, next(r["pid"] for r in inside if r["pid"] != parent_pid)}
    assert all(r["parent"] == forker[0]["span_id"] for r in inside)
    ids = [r["span_id"] for r in rows]
    assert len(ids) == len(set(ids)), "parent and child generated the same span ids"


# -- a signal handler calling traced code during an export -------------------------------

SIGNAL_MODULE = '''
def work(i):
    return i + 1

def in_handler(signum):
    return signum
'''

SIGNAL_SCRIPT = '''
import json, os, signal, sys, threading
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
import autotrace

backend, module, processor = sys.argv[1:4]
lock = threading.Lock()  # not reentrant: re-entering the export would deadlock

class LockingExporter(SpanExporter):
    def __init__(self):
        self.exported = 0
        self.kicked = False
        self.handled_inside = 0

    def export(self, spans):
        with lock:
            if not self.kicked:
                self.kicked = True
                before = len(handled)
                os.kill(os.getpid(), signal.SIGUSR1)  # the handler runs here, lock held
                self.handled_inside = len(handled) - before
            self.exported += len(spans)
        return SpanExportResult.SUCCESS

class OwnProcessor(SpanProcessor):
    """A user's processor exporting synchronously without OpenTelemetry's
    suppress-instrumentation flag: only autotrace's own re-entry guard helps."""
    def __init__(self, exporter):
        self.exporter = exporter
    def on_end(self, span):
        self.exporter.export((span,))

exporter = LockingExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter) if processor == "simple"
                            else OwnProcessor(exporter))
autotrace.install([module], backend=backend, tracer_provider=provider)
mod = __import__(module)
handled = []

def handler(signum, frame):
    handled.append(mod.in_handler(signum))

signal.signal(signal.SIGUSR1, handler)
signal.signal(signal.SIGALRM, handler)
ok = [mod.work(i) for i in range(100)] == list(range(1, 101))
signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)  # a storm of handlers, anywhere
try:
    ok = ok and [mod.work(i) for i in range(20000)] == list(range(1, 20001))
finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
print(json.dumps({"ok": ok, "handled": len(handled), "inside": exporter.handled_inside,
                  "exported": exporter.exported}))
'''


@pytest.mark.skipif(not hasattr(signal, "setitimer") or not hasattr(signal, "SIGUSR1"),
                    reason="needs POSIX signals")
@pytest.mark.parametrize("processor", ["simple", "own"],
                         ids=["simple-processor", "own-processor-no-suppress-flag"])
def test_a_signal_handler_calling_traced_code_during_an_export_does_not_deadlock(
        traced: Traced, processor: str) -> None:
    name = traced.modules.module("sigmod", SIGNAL_MODULE)
    try:
        proc = _run_script(SIGNAL_SCRIPT, [traced.backend, name, processor],
                           traced.modules.root)
    except subprocess.TimeoutExpired:
        pytest.fail("deadlock: a signal handler re-entered the exporter's lock")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] is True
    assert result["inside"] == 1, "the handler did not run inside the export"
    assert result["handled"] >= 1 and result["exported"] >= 20100


# -- KeyboardInterrupt and SystemExit -------------------------------------------------------

INTERRUPTS = '''
import signal

raised = []

def interrupt():
    exc = KeyboardInterrupt("stop")
    raised.append(exc)
    raise exc

def leave(code):
    exc = SystemExit(code)
    raised.append(exc)
    raise exc

def ctrl_c():
    signal.raise_signal(signal.SIGINT)  # the default handler raises KeyboardInterrupt
    return "not reached"

def numbers():
    yield 1
    raise KeyboardInterrupt("in a generator")

async def leaving():
    raise SystemExit(7)
'''


class _Ends(SpanProcessor):
    def __init__(self) -> None:
        self.ended: list[int] = []

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span.context.span_id)


def test_keyboard_interrupt_and_system_exit_pass_through_unchanged(traced: Traced) -> None:
    ends = _Ends()
    traced.provider.add_span_processor(ends)
    mod = traced.load("mod", INTERRUPTS)
    with pytest.raises(KeyboardInterrupt) as ki:
        mod.interrupt()
    raised: list[BaseException] = mod.raised
    assert ki.value is raised[-1]
    with pytest.raises(SystemExit) as se:
        mod.leave(3)
    assert id(se.value) == id(raised[-1]) and se.value.code == 3
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with pytest.raises(KeyboardInterrupt):
                mod.ctrl_c()
        finally:
            signal.signal(signal.SIGINT, previous)
    gen = mod.numbers()
    assert next(gen) == 1
    with pytest.raises(KeyboardInterrupt, match="in a generator"):
        next(gen)
    with pytest.raises(SystemExit) as se2:
        asyncio.run(mod.leaving())
    assert se2.value.code == 7
    spans = traced.spans()
    assert sorted(s.name for s in spans) == sorted(
        ["interrupt", "leave", "ctrl_c", "numbers", "leaving"])
    assert all(s.status.is_unset for s in spans), "not errors, as OpenTelemetry's use_span"
    assert sorted(Counter(ends.ended).values()) == [1] * 5
    assert trace.get_current_span() is trace.INVALID_SPAN


# -- secrets never reach an exporter in clear text ------------------------------------------

SECRETS = '''
import collections, dataclasses

Login = collections.namedtuple("Login", "user password")

@dataclasses.dataclass
class Creds:
    user: str
    api_key: str
    nested: dict

def login(user, password, **extra):
    return {"user": user, "session": "SESSION-SECRET-01"}

def connect(config, servers):
    return len(config)

def get_api_key():
    return "RETURNED-SECRET-02"

def store(creds, login_, mapping):
    return creds.user

class Client:
    def __init__(self, token, name):
        self.name = name

    def call(self, payload, *, auth_header=None):
        return payload.get("id")

    def fetch_token(self):
        return "RETURNED-SECRET-03"
'''


@pytest.mark.parametrize("repr_objects", [False, True], ids=["safe-render", "repr-objects"])
def test_secrets_never_reach_the_exporter(modules: Any, backend: str,
                                          repr_objects: bool) -> None:
    out = io.StringIO()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out)))
    name = modules.module("secrets", SECRETS)
    autotrace.install([name], backend=backend, tracer_provider=provider,
                      repr_objects=repr_objects)
    import importlib
    mod = importlib.import_module(name)
    assert mod.login("alice", "PW-SECRET-04", auth_token="KWARGS-SECRET-05",
                     note="visible-note")["user"] == "alice"
    assert mod.connect({"db": {"password": "NESTED-SECRET-06", "host": "visible-host"},
                        "Cookie": "COOKIE-SECRET-07"},
                       [{"token": "LIST-SECRET-08"}, ({"jwt": "TUPLE-SECRET-09"},)]) == 2
    assert mod.get_api_key() == "RETURNED-SECRET-02"
    creds = mod.Creds("bob", "DATACLASS-SECRET-10", {"private_key": "DC-NESTED-SECRET-11"})
    assert mod.store(creds, mod.Login("carol", "NAMEDTUPLE-SECRET-12"),
                     {b"password": "BYTES-KEY-SECRET-13", "SESSION_ID": "UPPER-SECRET-14"}
                     ) == "bob"
    client = mod.Client("CTOR-SECRET-15", "visible-client")
    assert client.call({"id": 1, "x-api-key": "HEADER-SECRET-16"},
                       auth_header="KW-SECRET-17") == 1
    assert client.fetch_token() == "RETURNED-SECRET-03"
    provider.force_flush()
    exported = out.getvalue()
    assert exported.count('"name":') == 7, exported[:500]  # the spans did reach it
    for visible in ("alice", "visible-note", "visible-host", "bob", "carol",
                    "visible-client"):
        assert visible in exported, f"{visible} missing: the test would prove nothing"
    leaked = sorted(set(part for part in exported.replace('"', " ").replace("'", " ").split()
                        if "SECRET" in part))
    assert not leaked, f"secrets in the exported spans: {leaked}"
    assert "[REDACTED]" in exported
    provider.shutdown()


# -- generators finalised by the garbage collector during an export -------------------------

GC_MODULE = '''
def numbers(n):
    for i in range(n):
        yield i

def guarded(n):
    try:
        for i in range(n):
            yield i
    finally:
        pass

def work(i):
    return i
'''

GC_SCRIPT = '''
import gc, json, sys, threading
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
import autotrace

backend, module = sys.argv[1:3]
lock = threading.Lock()  # an exporter guarding its state, as real ones do
collect_inside = False
names = []

class LockingExporter(SpanExporter):
    def export(self, spans):
        with lock:
            if collect_inside:
                gc.collect()  # what any allocation in here may trigger
            names.extend(s.name for s in spans)
        return SpanExportResult.SUCCESS

provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(LockingExporter()))
autotrace.install([module], backend=backend, tracer_provider=provider)
mod = __import__(module)
tracer = provider.get_tracer("manual")

def abandon(count):
    for i in range(count):
        gen = (mod.numbers if i % 2 else mod.guarded)(5)
        next(gen)
        cycle = [gen]
        cycle.append(cycle)  # only the cyclic collector frees it

gc.disable()
abandon(20)
collect_inside = True
mod.work(1)  # the export of this span finalises the generators, lock held
collect_inside = False
abandon(20)
collect_inside = True
with tracer.start_as_current_span("manual"):  # a span that is not autotrace's
    pass
collect_inside = False
mod.work(2)
gc.enable()
print(json.dumps(sorted(names)))
'''


def test_generators_finalised_during_an_export_do_not_deadlock(traced: Traced) -> None:
    """Found by more-itertools under the monitoring backend: the garbage collector ran
    inside an export (the exporter holding its lock) and finalised abandoned traced
    generators, whose spans then ended and exported right there: a deadlock."""
    name = traced.modules.module("gcmod", GC_MODULE)
    try:
        proc = _run_script(GC_SCRIPT, [traced.backend, name], traced.modules.root)
    except subprocess.TimeoutExpired:
        pytest.fail("deadlock: a span ended inside the exporter that was exporting")
    assert proc.returncode == 0, proc.stderr
    names = Counter(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert names == {"work": 2, "manual": 1, "numbers": 20, "guarded": 20}, names
