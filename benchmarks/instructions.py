"""Instructions per call, counted by callgrind: figures that load on the machine cannot move.

    python benchmarks/instructions.py                  # this Python: results/instructions-X.Y.md
    python benchmarks/instructions.py --python 3.11    # run.py's venv for 3.11
    python benchmarks/instructions.py --rows 'plain,cprofile,*/dropped' --json out.json
    python benchmarks/instructions.py --cores python,compiled   # once there is a compiled core

Each row runs ``def f(a, b): return a + b`` (a real module written to a temp
dir) in fresh processes under ``valgrind --tool=callgrind``, ``PYTHONHASHSEED=0``,
no ``OTEL_*`` variable inherited. Two processes per row, identical but for
their loop counts:

* A: ``N`` calls of ``f(1, 2)``, then ``N`` iterations of an empty loop;
* B: ``2N`` calls, then 0 iterations of the empty loop.

``(I(B) - I(A)) / N`` is the cost of one call less one empty loop iteration.
Everything that does not scale with the calls cancels: interpreter start-up,
imports, ``install()``, wrapping, a function's first call (its description),
the provider's shutdown. Everything that does scale is counted, wherever it
runs: the collector freeing per-call garbage, metrics handed over at
collection, another thread's work. That is why this method and not
``--toggle-collect`` on a marker C function: no marker symbol to find in each
interpreter build, and no per-call work left outside the window.

Rows: the plain call; ``cProfile`` enabled (a C profiler recording every call); the
hand-written ``@tracer.start_as_current_span`` decorator; the SDK floor (the span
autotrace makes, by hand: ``start_span(name, start_time=..., attributes=<6>)`` +
``end(end_time=...)``, no context attach); then autotrace for each backend x core x
scenario. Three more shapes of call have a plain row and a dropped-inside-a-
pending-call row each, since a real program's calls are mostly not ``f(1, 2)``: a method
fetched through an instance, a property read, a generator's item, a generator of one
item made and run. The tracer provider is always a real SDK ``TracerProvider``: with no
provider autotrace stays dormant and only its wrappers would be measured (checked: a
dormant installation fails the row). Its spans end in a processor that counts them and
lets them go on the caller's thread (``--processor count``). A ``BatchSpanProcessor``
(``--processor batch``, into an exporter that discards) makes the figures depend on how
valgrind schedules its thread: the decorator measured 159,754 and 162,351 at N=2,000,
148,993 at N=10,000, and the queue dropped spans; counted, 149,434 and 149,419 at
N=2,000 and 8,000. The rows that make a span per call run ``--span-calls`` (default
N/10) calls: a span costs 300 plain calls and the figure settles long before.

A core is chosen with ``OTEL_PYTHON_AUTOTRACE_CORE``. ``--cores`` defaults to
the cores that install here: a probe process installs autotrace with each
candidate; before autotrace has a ``core`` option only ``python`` exists.
"""

from __future__ import annotations

import argparse
import bisect
import fnmatch
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
PACKAGE = "atbi"
#: Every core autotrace may have (issue 21); ``--cores`` picks among them.
CORES = ("python", "compiled")
BACKENDS = ("wrapt", "monitoring")
#: Under valgrind a call runs ~50x slower: a threshold no call here comes near, even
#: the pending parent that runs the whole loop.
NEVER = "3600s"

TARGET_SOURCE = '''
def f(a, b):
    return a + b


def parent(f, n):
    for _ in range(n):
        f(1, 2)


class C:
    def m(self, a, b):
        return a + b

    @property
    def p(self):
        return 3


def g(n):
    for i in range(n):
        yield i


def parent_method(n):
    c = C()
    for _ in range(n):
        c.m(1, 2)


def parent_property(n):
    c = C()
    for _ in range(n):
        c.p


def parent_generator(n):
    for _ in g(n):
        pass


def one(x):
    yield x


def parent_generator_call(n):
    for i in range(n):
        for _ in one(i):
            pass
'''

DECORATED_SOURCE = '''
from atb_env import tracer


@tracer.start_as_current_span("f")
def f(a, b):
    return a + b
'''

#: The span autotrace makes for ``f(1, 2)`` (same name, kind, six attributes, times taken
#: around the call), made by hand in the SDK's cheapest way: no context attached.
FLOOR_SOURCE = '''
from time import time_ns

from atb_env import tracer


def f(a, b):
    start = time_ns()
    result = a + b
    tracer.start_span("f", start_time=start, attributes={
        "code.function.parameters.a.value": a, "code.function.parameters.b.value": b,
        "code.function.name": "atbi.floor.f", "code.file.path": __file__,
        "code.line.number": 6, "code.function.return.value": result,
    }).end(end_time=time_ns())
    return result
'''

#: scenario -> (install() keywords, calls made inside a pending traced parent, label)
SCENARIOS: dict[str, tuple[dict[str, Any], bool, str]] = {
    "dropped": ({"min_duration": NEVER}, False, "dropped by `min_duration`, top level"),
    "dropped_nested": ({"min_duration": NEVER}, True,
                       "dropped by `min_duration`, inside a pending traced call"),
    "no_parent": ({"require_parent": True}, False, "`require_parent`, no parent"),
    "dropped_metrics": ({"min_duration": NEVER, "metrics": True}, False,
                        "dropped by `min_duration`, `metrics=True`"),
    "dropped_nested_metrics": ({"min_duration": NEVER, "metrics": True}, True,
                               "dropped by `min_duration` inside a pending call, `metrics=True`"),
    "metrics_only": ({"spans": False, "metrics": True}, False,
                     "metrics only (`spans=False`)"),
    # The shapes of a real program's calls, each inside a pending call (``parent_*``):
    "dropped_nested_method": ({"min_duration": NEVER}, True,
                              "`obj.m(1, 2)` dropped inside a pending call"),
    "dropped_nested_property": ({"min_duration": NEVER}, True,
                                "a property read dropped inside a pending call"),
    "dropped_nested_generator": ({"min_duration": NEVER}, True,
                                 "a generator's item (one resumption) dropped inside a "
                                 "pending call"),
    "dropped_nested_generator_call": ({"min_duration": NEVER}, True,
                                      "a generator made, run for one item and ended, "
                                      "dropped inside a pending call"),
    "full": ({}, False, "full span, arguments and return value"),
    # Every call kept under a policy: the span made after the fact, when the call ends
    # (what a kept call costs under ``min_duration``).
    "kept": ({"min_duration": "1ns"}, False,
             "full span made at the call's end (`min_duration='1ns'`: every call kept)"),
}


@dataclass(frozen=True)
class Row:
    name: str  # what --rows matches
    label: str
    module: str = "target"  # which module of the package defines f
    backend: str | None = None  # None: autotrace is not installed
    core: str | None = None
    scenario: str | None = None
    spans: bool = False  # makes a span per call: runs --span-calls calls
    shape: str = "function"  # what a call is: function, method, property, generator

    @property
    def options(self) -> dict[str, Any]:
        return SCENARIOS[self.scenario][0] if self.scenario else {}

    @property
    def nested(self) -> bool:
        return SCENARIOS[self.scenario][1] if self.scenario else False


BASE_ROWS = (
    Row("plain", "plain call"),
    Row("cprofile", "`cProfile` enabled"),
    Row("decorator", "hand-written `@tracer.start_as_current_span`", module="decorated",
        spans=True),
    Row("sdk_floor", "SDK floor: `start_span(start_time=, attributes=<6>)` + "
        "`end(end_time=)`", module="floor", spans=True),
    Row("plain_method", "plain `obj.m(1, 2)`", shape="method"),
    Row("plain_property", "plain property read", shape="property"),
    Row("plain_generator", "plain generator item", shape="generator"),
    Row("plain_generator_call", "plain generator of one item, made and run",
        shape="generator_call"),
)

#: The rows' scenarios that call another shape than ``f(1, 2)`` (through ``parent_*``).
SHAPES = {"dropped_nested_method": "method", "dropped_nested_property": "property",
          "dropped_nested_generator": "generator",
          "dropped_nested_generator_call": "generator_call"}


def autotrace_rows(backends: list[str], cores: list[str]) -> list[Row]:
    """Grouped by scenario, so that backends and cores sit side by side."""
    return [Row(f"{backend}/{core}/{scenario}", f"autotrace {backend}, {core} core: {label}",
                backend=backend, core=core, scenario=scenario, spans=scenario in ("full", "kept"),
                shape=SHAPES.get(scenario, "function"))
            for scenario, (_, _, label) in SCENARIOS.items()
            for backend in backends for core in cores]


def all_rows() -> list[Row]:
    return [*BASE_ROWS, *autotrace_rows(list(BACKENDS), list(CORES))]


# -- the measured process -------------------------------------------------------------------


def _calls(f: Any, n: int) -> None:
    for _ in range(n):
        f(1, 2)


def _empty(n: int) -> None:
    for _ in range(n):
        pass


def child(row: Row, calls: int, empty: int, root: Path, result: Path, processor: str) -> None:
    """Set the row up, warm it, run the two loops, shut down; JSON facts to ``result``."""
    import importlib

    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(root))
    from worker import DiscardExporter, install_env, write_package

    if not (root / PACKAGE).exists():  # the warm-up run writes (and compiles) the module
        write_package(root, PACKAGE, {"target": TARGET_SOURCE, "decorated": DECORATED_SOURCE,
                                      "floor": FLOOR_SOURCE})
    facts: dict[str, Any] = {"kept": None, "dormant": None, "core": None, "pid": os.getpid()}
    provider = reader = meter_provider = inst = None
    exported = [0]
    if row.spans or row.backend:
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        class Counting(DiscardExporter):
            def export(self, spans: Any) -> Any:
                exported[0] += len(spans)
                return super().export(spans)

        class CountingProcessor(SpanProcessor):
            """Counts each ended span and lets it go, on the thread that ended it."""

            def on_end(self, span: Any) -> None:
                exported[0] += 1

        provider = TracerProvider()
        provider.add_span_processor(CountingProcessor() if processor == "count" else
                                    BatchSpanProcessor(Counting()))
        install_env(provider.get_tracer("bench"))
    if row.options.get("metrics"):
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader])
    if row.backend:
        import autotrace

        inst = autotrace.install(patterns=[PACKAGE], backend=row.backend,
                                 tracer_provider=provider, meter_provider=meter_provider,
                                 **row.options)
        facts["dormant"] = getattr(getattr(inst, "_recorder", None), "dormant", None)
        facts["core"] = getattr(inst, "core", None)  # once installations say which core runs
    module = importlib.import_module(f"{PACKAGE}.{row.module}")
    f = module.f
    f(1, 2)  # first call: descriptions and caches, outside what differs between A and B
    shaped = None if row.shape == "function" else getattr(module, f"parent_{row.shape}")
    if shaped is not None:
        shaped(2)
    if reader is not None:
        reader.get_metrics_data()  # the buckets are known from here on, as in a live process
    profiler = None
    if row.name == "cprofile":
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    if shaped is not None:
        shaped(calls)  # the loop is the module's own: traced, and so pending, when installed
    elif row.nested:
        module.parent(f, calls)  # the same loop as _calls, inside a traced call
    else:
        _calls(f, calls)
    _empty(empty)
    if profiler is not None:
        profiler.disable()
    if reader is not None:
        reader.get_metrics_data()  # what is handed over at collection is counted too
    if inst is not None:
        inst.uninstall()
    if provider is not None:
        provider.shutdown()  # exports what is queued
        facts["kept"] = exported[0]
    if meter_provider is not None:
        meter_provider.shutdown()
    result.write_text(json.dumps(facts))


def probe(cores: list[str], result: Path) -> None:
    """What this interpreter can run: versions, and each backend x core that installs."""
    from importlib import metadata

    from opentelemetry.sdk.trace import TracerProvider

    import autotrace
    from autotrace.config import OPTIONS_BY_NAME

    versions = {}
    for dist in ("otel-autotrace", "opentelemetry-sdk", "wrapt"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    runs: dict[str, str | None] = {}  # "backend/core" -> None, or why it cannot run
    for core in cores:
        if "core" not in OPTIONS_BY_NAME and core != "python":
            for backend in BACKENDS:
                runs[f"{backend}/{core}"] = "autotrace has no core option yet (issue 21)"
            continue
        os.environ["OTEL_PYTHON_AUTOTRACE_CORE"] = core
        for backend in BACKENDS:
            try:
                inst = autotrace.install(patterns=["atbi_probe_matches_nothing"],
                                         backend=backend, tracer_provider=TracerProvider())
                inst.uninstall()
                runs[f"{backend}/{core}"] = None
            except Exception as exc:
                runs[f"{backend}/{core}"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    result.write_text(json.dumps({
        "python": platform.python_version(), "implementation": platform.python_implementation(),
        "minor": f"{sys.version_info[0]}.{sys.version_info[1]}", "versions": versions,
        "runs": runs}))


# -- the driver ---------------------------------------------------------------------------


@dataclass
class Measured:
    row: Row
    calls: int
    per_call: float
    kept: int | None  # spans exported by run B
    traced_calls: int  # calls of traced functions in run B
    totals: tuple[int, int] = (0, 0)
    extra: dict[str, Any] = field(default_factory=dict)


def clean_env(row: Row) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the warm-up run writes .pyc and rewrites
    env["PYTHONHASHSEED"] = "0"
    if row.core:
        env["OTEL_PYTHON_AUTOTRACE_CORE"] = row.core
    return env


def run_child(python: str, row: Row, calls: int, empty: int, root: Path,
              valgrind_out: Path | None, processor: str, perf: bool = False
              ) -> tuple[dict[str, Any], int | None]:
    """Facts the child reported, and the instructions callgrind counted (None: no valgrind).
    ``perf``: under ``-X perf`` (``python_profile``)."""
    result = root / "result.json"
    command = [python, *(["-X", "perf"] if perf else []), str(Path(__file__).resolve()),
               "--child", row.name, "--calls", str(calls),
               "--empty", str(empty), "--dir", str(root), "--result", str(result),
               "--processor", processor]
    if valgrind_out is not None:
        command = ["valgrind", "--tool=callgrind", "-q",
                   f"--callgrind-out-file={valgrind_out}", *command]
    done = subprocess.run(command, env=clean_env(row), capture_output=True, text=True,
                          timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{row.name}: the measured process failed ({done.returncode}):\n"
                         f"{done.stderr[-3000:]}")
    facts: dict[str, Any] = json.loads(result.read_text())
    if facts.get("dormant"):
        raise SystemExit(f"{row.name}: autotrace stayed dormant: only wrappers would be measured")
    if row.core and facts.get("core") not in (None, row.core):
        raise SystemExit(f"{row.name}: asked for the {row.core} core, {facts['core']} ran")
    if valgrind_out is None:
        return facts, None
    match = re.search(r"^(?:summary|totals): (\d+)", valgrind_out.read_text(), re.M)
    if match is None:
        raise SystemExit(f"{row.name}: no instruction total in {valgrind_out}")
    return facts, int(match.group(1))


def measure(python: str, row: Row, calls: int, keep: Path | None, annotate: int,
            processor: str, python_functions: int = 0) -> Measured:
    WORK.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="instr-", dir=WORK))
    try:
        run_child(python, row, 1, 1, root, None, processor)  # warm-up: .pyc, caches
        outs = [(keep or root) / f"callgrind.{row.name.replace('/', '-')}.{which}"
                for which in ("A", "B")]
        _, first = run_child(python, row, calls, calls, root, outs[0], processor)
        facts, second = run_child(python, row, 2 * calls, 0, root, outs[1], processor)
        assert first is not None and second is not None
        traced = 2 * calls + 1 + row.nested  # the loop's calls, the first call, the parent
        found = Measured(row, calls, (second - first) / calls, facts.get("kept"), traced,
                         (first, second))
        if annotate:
            found.extra["profile"] = profile(outs[0], outs[1], calls, found.per_call, annotate)
        if python_functions:
            found.extra["python_profile"] = python_profile(python, row, calls, root, keep,
                                                           processor, python_functions)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return found


_ANNOTATED = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+(\S.*?)(?: \[[^]]*\])?$")


def function_costs(path: Path, inclusive: bool) -> tuple[dict[str, int], set[str]]:
    """Instructions per C function (``callgrind_annotate``), and the recursive ones.

    Parts of one function inlined from several files are added up; callgrind's
    recursion levels (``f'2``) too, which is right for self costs only. ``--auto=no``:
    with a source file on disk (the compiled core's ``_core.c``) callgrind_annotate
    would append that file annotated, whose call lines the table's pattern matches."""
    out = subprocess.run(["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}",
                          "--threshold=100", "--auto=no", str(path)], capture_output=True,
                         text=True, check=True).stdout
    costs: dict[str, int] = {}
    recursive: set[str] = set()
    table = False
    for line in out.splitlines():
        if "file:function" in line:
            table = True
            continue
        match = _ANNOTATED.match(line) if table else None
        if match is None:
            continue
        name = match.group(2).rsplit(":", 1)[-1]
        base = re.sub(r"'\d+$", "", name)
        if base != name:
            recursive.add(base)
        costs[base] = costs.get(base, 0) + int(match.group(1).replace(",", ""))
    return costs, recursive


def profile(first: Path, second: Path, calls: int, per_call: float, top: int
            ) -> dict[str, list[tuple[str, float]]]:
    """Where a call's instructions go: per C function, run B less run A, over N.

    Self costs add up to the row's figure. Inclusive costs are shown only for
    functions the interpreter does not re-enter (those of the eval loop count the
    same instructions once per level), below the process's own entry points (all of
    the call) and with a symbol."""
    shown: dict[str, list[tuple[str, float]]] = {}
    for kind in ("self", "inclusive"):
        a, rec_a = function_costs(first, kind == "inclusive")
        b, rec_b = function_costs(second, kind == "inclusive")
        per = {name: (b.get(name, 0) - a.get(name, 0)) / calls for name in set(a) | set(b)}
        if kind == "inclusive":
            per = {k: v for k, v in per.items()
                   if k not in rec_a | rec_b and v < per_call * 0.999 and not k.startswith("0x")}
        shown[kind] = sorted(per.items(), key=lambda kv: -kv[1])[:top]
    return shown


_TRAMPOLINE = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+\?\?\?:0x([0-9a-f]+)('\d+)?")


def python_costs(path: Path, perf_map: Path) -> dict[str, int]:
    """Inclusive instructions per Python function of a run under ``-X perf``.

    With ``-X perf`` (3.12+) each Python function runs through a trampoline of its own,
    named in ``/tmp/perf-PID.map``; callgrind sees the trampolines as unnamed functions,
    so their inclusive costs, mapped back through that file, are the Python functions'.
    Recursion levels (``'2``) are left out: they count the same instructions again."""
    spans: list[tuple[int, int, str]] = []
    for line in perf_map.read_text().splitlines():
        start, size, name = line.split(" ", 2)
        spans.append((int(start, 16), int(size, 16), name.removeprefix("py::")))
    spans.sort()
    starts = [start for start, _, _ in spans]
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100",
                          "--auto=no", str(path)], capture_output=True, text=True,
                         check=True).stdout
    costs: dict[str, int] = {}
    for line in out.splitlines():
        match = _TRAMPOLINE.match(line)
        if match is None or match.group(3):
            continue
        address = int(match.group(2), 16)
        index = bisect.bisect_right(starts, address) - 1
        if index < 0 or address >= spans[index][0] + spans[index][1]:
            continue
        name = spans[index][2]
        costs[name] = max(costs.get(name, 0), int(match.group(1).replace(",", "")))
    return costs


def python_profile(python: str, row: Row, calls: int, root: Path, keep: Path | None,
                   processor: str, top: int) -> list[tuple[str, float]]:
    """Where a call's instructions go by Python function (inclusive, per call): runs A
    and B again under ``-X perf`` (each Python call then pays a trampoline, so these
    are a little above the row's figure) and maps callgrind's trampolines back to
    their functions. Needs 3.12+ on Linux."""
    costs = []
    for which, (n, empty) in (("PA", (calls, calls)), ("PB", (2 * calls, 0))):
        out = (keep or root) / f"callgrind.{row.name.replace('/', '-')}.{which}"
        facts, _ = run_child(python, row, n, empty, root, out, processor, perf=True)
        perf_map = Path(f"/tmp/perf-{facts['pid']}.map")
        if not perf_map.exists():
            raise SystemExit(f"{row.name}: no {perf_map}: -X perf needs Python 3.12+ on Linux")
        try:
            costs.append(python_costs(out, perf_map))
        finally:
            perf_map.unlink(missing_ok=True)
    a, b = costs
    per = {name: (b.get(name, 0) - a.get(name, 0)) / calls for name in set(a) | set(b)
           if not name.endswith(f":{Path(__file__).resolve()}")}  # the harness's own loop
    shown = sorted(per.items(), key=lambda kv: -kv[1])[:top]
    repo = f"{HERE.parent}/"
    return [(re.sub(r":/\S*/site-packages/", ":", name).replace(f":{repo}", ":"), cost)
            for name, cost in shown]


def resolve_python(given: str | None) -> str:
    """An interpreter path, or X.Y: the venv ``run.py`` makes for that version."""
    if not given:
        return sys.executable
    if re.fullmatch(r"3\.\d+", given):
        sys.path.insert(0, str(HERE))
        from run import ensure_venv, find_interpreters

        found = find_interpreters()
        if given not in found:
            raise SystemExit(f"--python {given}: no such Python under $(pyenv root)/versions")
        WORK.mkdir(exist_ok=True)
        return str(ensure_venv(given, found[given]))
    return given


def run_probe(python: str, cores: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        subprocess.run([python, str(Path(__file__).resolve()), "--probe", ",".join(cores),
                        "--result", str(out)], check=True, env=env, timeout=600)
        found: dict[str, Any] = json.loads(out.read_text())
        return found


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x" if value < 100 else f"{value:.0f}x"


def report(data: dict[str, Any]) -> str:
    """The markdown table of a run (``data``: what ``--json`` writes)."""
    results = data["rows"]
    info = data["info"]
    by_name = {m["name"]: m["instructions_per_call"] for m in results}
    plain, cprofile, floor = (by_name.get(n) for n in ("plain", "cprofile", "sdk_floor"))
    spans = {r.name for r in all_rows() if r.spans}
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    lines = [
        f"# Instructions per call: {info['implementation']} {info['python']}",
        "",
        f"`{data['command']}`, {data['when']}, {data['machine']}, valgrind "
        f"{data['valgrind']}; {versions}.",
        "",
        "`def f(a, b): return a + b` called as `f(1, 2)`; per call: (I(2N calls) - I(N calls + "
        "N empty loop iterations)) / N, counted by `valgrind --tool=callgrind` over the whole "
        "process, `PYTHONHASHSEED=0`. A real SDK `TracerProvider`; spans end in "
        + ("a processor that counts them (on the caller's thread); "
           if data.get("processor", "batch") == "count" else
           "a `BatchSpanProcessor` into an exporter that discards; ")
        + "*kept*: spans ended in the 2N run, of its traced calls. Run to run, most figures "
        "move by about 0.2%; those that set a `ContextVar` per call can move by up to 12%: a "
        "`ContextVar`'s hash comes from its address, so the shape of the context's map, and "
        "what each set costs, depend on the memory layout (3.11, wrapt dropped: 19,825 and "
        "22,168 in two runs).",
        "",
        "| row | N | instructions per call | x plain | x cProfile | x SDK floor | kept |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in results:
        value = m["instructions_per_call"]
        cells = [f"{value:,.0f}"]
        for base in (plain, cprofile):
            cells.append(fmt_ratio(value / base) if base else "")
        cells.append(fmt_ratio(value / floor) if floor and m["name"] in spans else "")
        kept = "" if m["kept"] is None else f"{m['kept']:,} / {m['traced_calls']:,}"
        lines.append(f"| {m['label']} | {m['calls']:,} | " + " | ".join(cells) + f" | {kept} |")
    for m in results:
        found = m.get("profile")
        if not found:
            continue
        lines += ["", f"### {m['label']}: instructions per call by C function", "",
                  "| self | function | | inclusive | function |",
                  "| ---: | --- | --- | ---: | --- |"]
        for (s_name, s_cost), (i_name, i_cost) in zip(found["self"], found["inclusive"],
                                                       strict=False):
            lines.append(f"| {s_cost:,.0f} | `{s_name}` | | {i_cost:,.0f} | `{i_name}` |")
    for m in results:
        functions = m.get("python_profile")
        if not functions:
            continue
        lines += ["", f"### {m['label']}: instructions per call by Python function", "",
                  "Inclusive, under `-X perf` (a trampoline more per Python call).", "",
                  "| inclusive | function |", "| ---: | --- |"]
        lines += [f"| {cost:,.0f} | `{name}` |" for name, cost in functions]
    skipped = {key: why for key, why in info["runs"].items() if why is not None}
    if skipped:
        lines += ["", "Not run here:", ""]
        lines += [f"- `{name}/*`: {why.split(';')[0].split('. ')[0]}"
                  for name, why in skipped.items()]
    return "\n".join(lines) + "\n"


def valgrind_version() -> str:
    try:
        out = subprocess.run(["valgrind", "--version"], capture_output=True, text=True)
        return out.stdout.strip().removeprefix("valgrind-")
    except OSError:
        return "absent"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", help="interpreter path, or X.Y for the venv run.py makes "
                        "(default: this one)")
    parser.add_argument("--rows", help="comma-separated names or globs, e.g. "
                        "'plain,cprofile,wrapt/*/dropped' (default: all; see --list)")
    parser.add_argument("--cores", help=f"comma-separated, of {', '.join(CORES)} (default: "
                        "those that install)")
    parser.add_argument("--calls", type=int, default=20_000, help="N (default 20,000)")
    parser.add_argument("--span-calls", type=int, help="N for rows that make a span per call "
                        "(default: N/10)")
    parser.add_argument("--processor", choices=("count", "batch"), default="count",
                        help="where spans end: count (a processor that counts them on the "
                        "caller's thread; default) or batch (BatchSpanProcessor, discarding "
                        "exporter: its thread makes the figures depend on scheduling)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--out", type=Path, help="the markdown report (default: "
                        "results/instructions-X.Y.md when every row runs; '-': none)")
    parser.add_argument("--keep", type=Path, help="keep the callgrind output files here "
                        "(for callgrind_annotate)")
    parser.add_argument("--annotate", type=int, default=0, metavar="K",
                        help="also list each row's K costliest C functions per call (self "
                        "and inclusive, from callgrind_annotate)")
    parser.add_argument("--python-functions", type=int, default=0, metavar="K",
                        help="also list each row's K costliest Python functions per call "
                        "(inclusive; two more runs under -X perf; 3.12+)")
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="measure nothing: write the report of a run saved with --json")
    parser.add_argument("--list", action="store_true", help="list the row names and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--empty", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        row = next(r for r in all_rows() if r.name == args.child)
        child(row, args.calls, args.empty, args.dir, args.result, args.processor)
        return
    if args.probe:
        probe(args.probe.split(","), args.result)
        return
    if args.list:
        print("\n".join(r.name for r in all_rows()))
        return
    cores = args.cores.split(",") if args.cores else list(CORES)
    unknown = set(cores) - set(CORES)
    if unknown:
        raise SystemExit(f"--cores: unknown {', '.join(sorted(unknown))}; accepted: "
                         f"{', '.join(CORES)}")
    if args.from_json:
        data = json.loads(args.from_json.read_text())
    else:
        data = run_rows(args, cores)
    text = report(data)
    print(text)
    out = args.out or (None if args.rows else
                       HERE / "results" / f"instructions-{data['info']['minor']}.md")
    if out is not None and str(out) != "-":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))


def run_rows(args: argparse.Namespace, cores: list[str]) -> dict[str, Any]:
    """Measure the rows asked for; the figures, as ``--json`` writes them."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    python = resolve_python(args.python)
    info = run_probe(python, cores)
    runnable = [key for key, why in info["runs"].items() if why is None]
    rows = [*BASE_ROWS, *(r for r in autotrace_rows(list(BACKENDS), cores)
                          if f"{r.backend}/{r.core}" in runnable)]
    if args.rows:
        patterns = [p.strip() for p in args.rows.split(",") if p.strip()]
        rows = [r for r in rows if any(fnmatch.fnmatchcase(r.name, p) for p in patterns)]
    if not rows:
        raise SystemExit("no row to run (see --list)")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    span_calls = args.span_calls or max(1, args.calls // 10)
    results = []
    for row in rows:
        calls = span_calls if row.spans else args.calls
        print(f"::: {row.name}: {calls:,} and {2 * calls:,} calls under callgrind",
              file=sys.stderr, flush=True)
        results.append(measure(python, row, calls, args.keep, args.annotate, args.processor,
                               args.python_functions))
        print(f"    {results[-1].per_call:,.0f} instructions per call", file=sys.stderr,
              flush=True)
    return {
        "info": info, "when": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "command": " ".join(["python benchmarks/instructions.py", *sys.argv[1:]]).strip(),
        "machine": platform.machine(), "valgrind": valgrind_version(),
        "processor": args.processor,
        "rows": [{"name": m.row.name, "label": m.row.label, "calls": m.calls,
                  "instructions_per_call": m.per_call, "kept": m.kept,
                  "traced_calls": m.traced_calls, "totals": list(m.totals), **m.extra}
                 for m in results]}


if __name__ == "__main__":
    main()
