"""One measurement process of the strategy comparison benchmark; ``bench.py`` starts it.

A process per provider setup, because a process can only hold one global
tracer provider and Logfire installs its own. Inside a process every
contender is compared with the baseline it is judged against (plain call,
hand-written decorator) by interleaving their samples, so a noisy neighbour
slows all of them alike and the ratios stay honest. autotrace allows one
installation at a time, so the process runs one phase per contender:
install, import that contender's copy of the workload module, measure it
interleaved with plain and decorator, uninstall.

Modes (results go to ``--json`` as JSON):

* ``calls --provider nosdk|sampled|recording``: ns per call of every workload;
* ``imports [--warm-cache]``: ms per import of a generated 1,000-function module;
  with ``--warm-cache`` every copy is imported once untimed and dropped from
  ``sys.modules`` first, so the timed imports read autotrace's rewrite cache (wrapt)
  as a program's second run would; without it each timed import rewrites its copy;
* ``rss --contender decorator|wrapt|monitoring``: RSS after 10,000 and 1,000,000 calls.
"""

from __future__ import annotations

import argparse
import atexit
import compileall
import gc
import importlib
import json
import os
import resource
import shutil
import sys
import tempfile
import textwrap
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from time import perf_counter_ns
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

import autotrace

WORK = Path(__file__).resolve().parent / ".work"

# -- the workload module ------------------------------------------------------------------

#: What every contender runs; ``skipped`` is imported through the hook but excluded.
PLAIN_SOURCE = '''
def add(a, b):
    return a + b


class Thing:
    def method(self, a, b):
        return a + b


def gen(n):
    for i in range(n):
        yield i


async def coro(a, b):
    return a + b


def depth(n):
    return 0 if n == 0 else depth(n - 1) + 1


def skipped(a, b):
    return a + b
'''

#: The standard hand-written way; a generator gets a ``with`` block, since the
#: decorator would end its span when the generator object is created.
DECORATED_SOURCE = '''
from atb_env import tracer


@tracer.start_as_current_span("add")
def add(a, b):
    return a + b


class Thing:
    @tracer.start_as_current_span("Thing.method")
    def method(self, a, b):
        return a + b


def gen(n):
    with tracer.start_as_current_span("gen"):
        for i in range(n):
            yield i


@tracer.start_as_current_span("coro")
async def coro(a, b):
    return a + b


@tracer.start_as_current_span("depth")
def depth(n):
    return 0 if n == 0 else depth(n - 1) + 1
'''


#: The least any tool can do through the public API for the span autotrace makes:
#: the same six attributes, ``start_span`` + ``attach``/``detach`` + ``end``.
FLOOR_SOURCE = '''
from opentelemetry import context, trace
from atb_env import tracer

STATIC = {"code.function.name": "atb_floor.calls.add", "code.file.path": __file__,
          "code.line.number": 10}


def add(a, b):
    span = tracer.start_span("add", None, trace.SpanKind.INTERNAL, {
        **STATIC, "code.function.parameters.a.value": a, "code.function.parameters.b.value": b})
    token = context.attach(trace.set_span_in_context(span))
    try:
        result = a + b
    finally:
        context.detach(token)
    span.set_attribute("code.function.return.value", result)
    span.end()
    return result
'''


def write_package(root: Path, package: str, modules: dict[str, str]) -> None:
    """Write ``package`` with ``modules`` under ``root`` and compile them (imports use .pyc)."""
    directory = root / package
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "__init__.py").write_text("")
    for name, source in modules.items():
        (directory / f"{name}.py").write_text(source)
    compileall.compile_dir(str(directory), quiet=1)


def big_module_source(functions: int = 500, classes: int = 100, methods: int = 5) -> str:
    """1,000 functions in all: module-level ones plus ``classes`` x ``methods`` methods."""
    parts = [f"def f{i}(a, b=1):\n    return a + b\n" for i in range(functions)]
    for c in range(classes):
        body = "".join(f"    def m{m}(self, x):\n        return x + {m}\n\n"
                       for m in range(methods))
        parts.append(f"class C{c}:\n{body}")
    return "\n\n".join(parts)


# -- providers -------------------------------------------------------------------------------


class DiscardExporter(SpanExporter):
    """Accepts every batch and keeps nothing, so only the tracing cost is measured."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def make_provider(setup: str) -> TracerProvider | None:
    """The SDK provider of a setup, or None for the API-only (no SDK) setup."""
    if setup == "nosdk":
        return None
    provider = TracerProvider(sampler=ALWAYS_OFF) if setup == "sampled" else TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardExporter()))
    return provider


def configure_logfire(setup: str) -> Any:
    """Logfire at its leanest, recording into the same discarding batch processor.

    Nothing is sent or printed; metrics, scrubbing and the baggage processor are
    off, so Logfire's own span pipeline is all that is added to the SDK's.
    """
    import logfire

    sampling = logfire.SamplingOptions(head=ALWAYS_OFF) if setup == "sampled" else None
    logfire.configure(
        send_to_logfire=False, console=False, metrics=False, scrubbing=False,
        inspect_arguments=False, add_baggage_to_attributes=False, sampling=sampling,
        additional_span_processors=[BatchSpanProcessor(DiscardExporter())],
    )
    return logfire


# -- timing ------------------------------------------------------------------------------------
# Each function runs a workload ``loops`` times and returns ns per operation.
# Calls are unrolled five to a loop iteration so the loop itself weighs little.


def _function(mod: Any, loops: int) -> float:
    f = mod.add
    t0 = perf_counter_ns()
    for _ in range(loops):
        f(1, 2)
        f(1, 2)
        f(1, 2)
        f(1, 2)
        f(1, 2)
    return (perf_counter_ns() - t0) / (loops * 5)


def _method(mod: Any, loops: int) -> float:
    obj = mod.Thing()
    t0 = perf_counter_ns()
    for _ in range(loops):
        obj.method(1, 2)
        obj.method(1, 2)
        obj.method(1, 2)
        obj.method(1, 2)
        obj.method(1, 2)
    return (perf_counter_ns() - t0) / (loops * 5)


def _generator(mod: Any, loops: int) -> float:
    g = mod.gen
    t0 = perf_counter_ns()
    for _ in range(loops):
        for _item in g(10):
            pass
    return (perf_counter_ns() - t0) / loops


def _async(mod: Any, loops: int) -> float:
    """Drives the coroutine by hand: an event loop would dwarf what is measured."""
    c = mod.coro
    t0 = perf_counter_ns()
    for _ in range(loops):
        co = c(1, 2)
        try:
            co.send(None)
        except StopIteration:
            pass
    return (perf_counter_ns() - t0) / loops


def _recursive(mod: Any, loops: int) -> float:
    d = mod.depth
    t0 = perf_counter_ns()
    for _ in range(loops):
        d(9)
    return (perf_counter_ns() - t0) / loops


def _nonmatching(mod: Any, loops: int) -> float:
    f = getattr(mod, "skipped", None) or mod.add  # plain: the same body, untraced module
    t0 = perf_counter_ns()
    for _ in range(loops):
        f(1, 2)
        f(1, 2)
        f(1, 2)
        f(1, 2)
        f(1, 2)
    return (perf_counter_ns() - t0) / (loops * 5)


Timer = Callable[[Any, int], float]
WORKLOADS: dict[str, Timer] = {
    "function": _function,
    "method": _method,
    "generator": _generator,
    "async": _async,
    "recursive": _recursive,
    "nonmatching": _nonmatching,
}

#: Which contenders run which workloads (the decorator has no "non-matching" case;
#: Logfire leaves generators untraced and selects whole modules, not functions).
NOT_APPLICABLE = {("decorator", "nonmatching"), ("logfire", "nonmatching"),
                  ("logfire", "generator")} | {("floor", w) for w in WORKLOADS if w != "function"}


def calibrate(timer: Timer, mod: Any, target_ns: float) -> int:
    """Loops per sample so that one sample lasts about ``target_ns``."""
    loops = 1
    while True:
        per_op = timer(mod, loops)
        if per_op * loops >= target_ns / 4 or loops >= 1 << 22:
            return max(1, int(loops * target_ns / max(per_op * loops, 1.0)))
        loops *= 4


def measure(contenders: dict[str, Any], repeats: int, target_ns: float
            ) -> dict[str, dict[str, list[float]]]:
    """ns per operation, ``repeats`` samples per cell, contenders interleaved in turn."""
    cells = [(name, workload) for workload in WORKLOADS for name in contenders
             if (name, workload) not in NOT_APPLICABLE]
    loops = {cell: calibrate(WORKLOADS[cell[1]], contenders[cell[0]], target_ns)
             for cell in cells}
    out: dict[str, dict[str, list[float]]] = {name: {} for name in contenders}
    for r in range(repeats):
        for workload in WORKLOADS:
            names = [n for n in contenders if (n, workload) not in NOT_APPLICABLE]
            shift = r % len(names)  # rotate who goes first
            for name in names[shift:] + names[:shift]:
                value = WORKLOADS[workload](contenders[name], loops[(name, workload)])
                out[name].setdefault(workload, []).append(value)
    return out


# -- phases ------------------------------------------------------------------------------------


def fresh_root() -> Path:
    WORK.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="mods-", dir=WORK))
    atexit.register(shutil.rmtree, root, True)
    sys.path.insert(0, str(root))
    return root


def install_env(tracer: Any) -> None:
    """``atb_env``: where the decorated module takes its tracer from."""
    env = types.ModuleType("atb_env")
    env.tracer = tracer  # type: ignore[attr-defined]
    sys.modules["atb_env"] = env


def try_install(package: str, backend: str, provider: TracerProvider | None,
                exclude: list[str] | None = None) -> tuple[Any, str | None]:
    """``(installation, None)``, or ``(None, why)`` when the backend is not available."""
    try:
        return autotrace.install(patterns=[package], exclude=exclude, backend=backend,
                                 tracer_provider=provider), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def run_calls(setup: str, repeats: int, target_ns: float) -> dict[str, Any]:
    root = fresh_root()
    provider = make_provider(setup)
    tracer = (provider or trace.get_tracer_provider()).get_tracer("bench")
    install_env(tracer)
    sources = {"atb_plain": PLAIN_SOURCE, "atb_deco": DECORATED_SOURCE, "atb_floor": FLOOR_SOURCE,
               "atb_wrapt": PLAIN_SOURCE, "atb_mon": PLAIN_SOURCE, "atb_logfire": PLAIN_SOURCE}
    for package, source in sources.items():
        write_package(root, package, {"calls": source})
    plain = importlib.import_module("atb_plain.calls")
    deco = importlib.import_module("atb_deco.calls")
    phases: list[dict[str, Any]] = []

    def phase(name: str, module: Any | None, skipped: str | None) -> None:
        contenders = {"plain": plain, "decorator": deco}
        if name == "baseline":
            contenders["floor"] = importlib.import_module("atb_floor.calls")
        elif module is not None:
            contenders[name] = module
        cells = measure(contenders, repeats, target_ns) if skipped is None else {}
        phases.append({"contender": name, "skipped": skipped, "cells": cells})
        print(f"  {setup}: {name} {'skipped: ' + skipped if skipped else 'done'}",
              file=sys.stderr, flush=True)

    phase("baseline", None, None)
    for backend, package in (("wrapt", "atb_wrapt"), ("monitoring", "atb_mon")):
        inst, why = try_install(package, backend, provider, [f"{package}.calls.skipped"])
        if inst is None:
            phase(backend, None, why)
            continue
        try:
            phase(backend, importlib.import_module(f"{package}.calls"), None)
        finally:
            inst.uninstall()
    if setup == "nosdk":
        phase("logfire", None, "Logfire always runs its own SDK provider")
    else:
        try:
            logfire = configure_logfire(setup)
            logfire.install_auto_tracing(["atb_logfire"], min_duration=0)
            module = importlib.import_module("atb_logfire.calls")
        except Exception as exc:
            phase("logfire", None, f"{type(exc).__name__}: {exc}")
        else:
            phase("logfire", module, None)
    if provider is not None:
        provider.shutdown()
    return {"setup": setup, "phases": phases}


def run_imports(repeats: int, warm_cache: bool = False) -> dict[str, Any]:
    """Each sample imports a fresh copy; plain and traced copies alternate."""
    root = fresh_root()
    source = big_module_source()
    contenders = (("wrapt", "atb_impw"), ("monitoring", "atb_impm"), ("logfire", "atb_impl"))
    for _, package in contenders:
        copies = {f"m{i}": source for i in range(repeats + 1)}
        write_package(root, package, copies)
        write_package(root, package + "_plain", copies)
    phases: list[dict[str, Any]] = []
    for name, package in contenders:
        inst = None
        if name == "logfire":
            try:
                configure_logfire("recording").install_auto_tracing([package], min_duration=0)
                why = None
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
        else:
            inst, why = try_install(package, name, None)
        samples: dict[str, list[float]] = {"plain": [], name: []}
        if why is None and warm_cache:  # fill the caches, then import afresh from them
            for i in range(repeats + 1):
                for pkg in (package + "_plain", package):
                    importlib.import_module(f"{pkg}.m{i}")
                    del sys.modules[f"{pkg}.m{i}"]
                    delattr(sys.modules[pkg], f"m{i}")
        if why is None:
            for i in range(repeats + 1):  # the first pair warms up
                order = [(package + "_plain", "plain"), (package, name)]
                for pkg, key in order if i % 2 else order[::-1]:
                    gc.collect()  # each sample starts with the collector's counters at zero
                    t0 = perf_counter_ns()
                    importlib.import_module(f"{pkg}.m{i}")
                    elapsed = (perf_counter_ns() - t0) / 1e6
                    if i:
                        samples[key].append(elapsed)
        if inst is not None:
            inst.uninstall()
        phases.append({"contender": name, "skipped": why, "samples": samples})
        print(f"  imports: {name} {'skipped: ' + why if why else 'done'}",
              file=sys.stderr, flush=True)
    return {"phases": phases}


def rss_bytes() -> int:
    """Resident set size now (Linux), else the peak (``ru_maxrss``)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def run_rss(contender: str, calls: int) -> dict[str, Any]:
    """RSS after 10,000 and after ``calls`` calls, the span processor drained each time."""
    root = fresh_root()
    provider = make_provider("recording")
    assert provider is not None
    install_env(provider.get_tracer("bench"))
    package = {"decorator": "atb_deco", "wrapt": "atb_wrapt", "monitoring": "atb_mon"}[contender]
    write_package(root, package,
                  {"calls": DECORATED_SOURCE if contender == "decorator" else PLAIN_SOURCE})
    inst = None
    if contender != "decorator":
        inst, why = try_install(package, contender, provider)
        if inst is None:
            return {"contender": contender, "skipped": why}
    add = importlib.import_module(f"{package}.calls").add

    def settle() -> int:
        provider.force_flush()
        gc.collect()
        return rss_bytes()

    first = 10_000
    for _ in range(first):
        add(1, 2)
    after_first = settle()
    for _ in range(calls - first):
        add(1, 2)
    after_all = settle()
    if inst is not None:
        inst.uninstall()
    provider.shutdown()
    return {"contender": contender, "skipped": None, "calls": calls,
            "rss_first": after_first, "rss_all": after_all}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=textwrap.dedent(__doc__ or ""))
    parser.add_argument("mode", choices=["calls", "imports", "rss"])
    parser.add_argument("--provider", choices=["nosdk", "sampled", "recording"])
    parser.add_argument("--contender", choices=["decorator", "wrapt", "monitoring"])
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--sample-ms", type=float, default=8.0)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--warm-cache", action="store_true",
                        help="imports: time imports that read autotrace's rewrite cache")
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)
    if args.mode == "calls":
        result = run_calls(args.provider, args.repeats, args.sample_ms * 1e6)
    elif args.mode == "imports":
        result = run_imports(args.repeats, args.warm_cache)
    else:
        result = run_rss(args.contender, args.calls)
    Path(args.json).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
