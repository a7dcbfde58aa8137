"""The recording policies' cost, as ratios measured side by side in one process.

    python benchmarks/policies.py                  # both backends on this Python
    python benchmarks/policies.py --quick          # few samples (a smoke test)

Every contender runs the same two-argument function ``add(a, b)`` in an SDK
recording through a ``BatchSpanProcessor`` into a discarding exporter. The
baselines: the hand-written ``@tracer.start_as_current_span`` decorator (= 1),
and the cheapest hand-written span with autotrace's six attributes (static ones
at ``start_span``, arguments and return value in one ``set_attributes`` just
before ``end``, ``attach``/``detach``). autotrace allows one installation at a
time, so each configuration is a phase: install, import a fresh copy of the
module, measure it interleaved with the baselines (samples alternate, the
order rotates, a ratio is the median of side-by-side pairs), uninstall. The
last phase measures RSS after 10,000 and after 1,000,000 calls dropped by
``min_duration``. Results are printed and written to
``benchmarks/results/policies-X.Y.md``.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import statistics
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from time import perf_counter_ns
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from worker import fresh_root, install_env, make_provider, rss_bytes, write_package  # noqa: E402

import autotrace  # noqa: E402

PLAIN = '''
def add(a, b):
    return a + b


def parent(f, loops):
    for _ in range(loops):
        f(1, 2)
        f(1, 2)
        f(1, 2)
        f(1, 2)
        f(1, 2)
'''

DECORATED = '''
from atb_env import tracer


@tracer.start_as_current_span("add")
def add(a, b):
    return a + b
'''

FLOOR = '''
from opentelemetry import context, trace
from atb_env import tracer

STATIC = {"code.function.name": "atp_floor.calls.add", "code.file.path": __file__,
          "code.line.number": 10}
_INTERNAL = trace.SpanKind.INTERNAL


def add(a, b):
    span = tracer.start_span("add", None, _INTERNAL, STATIC)
    token = context.attach(trace.set_span_in_context(span))
    try:
        result = a + b
    finally:
        context.detach(token)
    span.set_attributes({"code.function.parameters.a.value": a,
                         "code.function.parameters.b.value": b,
                         "code.function.return.value": result})
    span.end()
    return result
'''

#: name -> (install() keywords, what the call runs under, label)
PHASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "full": ({}, "top", "full spans, arguments + return value"),
    "min_duration": ({"min_duration": "1s"}, "top", "dropped by `min_duration`"),
    "require_parent": ({"require_parent": True}, "top", "no parent under `require_parent`"),
    "max_depth": ({"max_depth": 1}, "traced-parent", "below `max_depth` (depth-limited)"),
    "min_duration_metrics": ({"min_duration": "1s", "metrics": True}, "top",
                             "dropped by `min_duration`, metrics on"),
    "metrics_only": ({"spans": False, "metrics": True}, "top", "metrics only (`spans=False`)"),
}


def _timer(f: Callable[..., Any], loops: int, under: Callable[..., Any] | None) -> float:
    if under is not None:  # inside one traced call: the timed calls are nested in it
        t0 = perf_counter_ns()
        under(f, loops)
        return (perf_counter_ns() - t0) / (loops * 5)
    t0 = perf_counter_ns()
    for _ in range(loops):
        f(1, 2)
        f(1, 2)
        f(1, 2)
        f(1, 2)
        f(1, 2)
    return (perf_counter_ns() - t0) / (loops * 5)


def _loops(f: Callable[..., Any], target_ns: float) -> int:
    per_call = _timer(f, 200, None)
    return max(20, int(target_ns / max(per_call * 5, 1.0)))


def measure_phase(contenders: dict[str, tuple[Callable[..., Any], Any]], repeats: int,
                  target_ns: float) -> dict[str, list[float]]:
    loops = {name: _loops(f, target_ns) for name, (f, _) in contenders.items()}
    loops = dict.fromkeys(loops, min(loops.values()))  # the same work for every contender
    out: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            f, under = contenders[name]
            out[name].append(_timer(f, loops[name], under))
    return out


def paired_median(mine: list[float], base: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(mine, base, strict=True))


def run_backend(backend: str, repeats: int, target_ns: float, rss_calls: int
                ) -> dict[str, Any]:
    root = fresh_root()
    provider = make_provider("recording")
    assert provider is not None
    install_env(provider.get_tracer("bench"))
    packages = {"atp_plain": PLAIN, "atp_deco": DECORATED, "atp_floor": FLOOR}
    packages.update({f"atp_{name}": PLAIN for name in PHASES})
    packages["atp_rss"] = PLAIN
    for package, source in packages.items():
        write_package(root, package, {"calls": source})
    plain = importlib.import_module("atp_plain.calls")
    deco = importlib.import_module("atp_deco.calls")
    floor = importlib.import_module("atp_floor.calls")
    results: dict[str, Any] = {}
    for name, (kwargs, under, _label) in PHASES.items():
        package = f"atp_{name}"
        reader = None
        if kwargs.get("metrics"):
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader

            reader = InMemoryMetricReader()
            kwargs = {**kwargs, "meter_provider": MeterProvider(metric_readers=[reader])}
        try:
            inst = autotrace.install([package], backend=backend, tracer_provider=provider,
                                     **kwargs)
        except Exception as exc:
            return {"skipped": f"{type(exc).__name__}: {exc}"}
        try:
            mod = importlib.import_module(f"{package}.calls")
            contender_under = mod.parent if under == "traced-parent" else None
            samples = measure_phase({
                "plain": (plain.add, None), "decorator": (deco.add, None),
                "floor": (floor.add, None), "autotrace": (mod.add, contender_under),
            }, repeats, target_ns)
            if reader is not None:  # the calls are replayed into the SDK here, not timed
                t0 = perf_counter_ns()
                reader.get_metrics_data()
                results[f"{name}_collect_ms"] = (perf_counter_ns() - t0) / 1e6
        finally:
            inst.uninstall()
        results[name] = {
            "ns": statistics.median(samples["autotrace"]),
            "decorator_ns": statistics.median(samples["decorator"]),
            "plain_ns": statistics.median(samples["plain"]),
            "vs_decorator": paired_median(samples["autotrace"], samples["decorator"]),
            "vs_floor": paired_median(samples["autotrace"], samples["floor"]),
            "floor_vs_decorator": paired_median(samples["floor"], samples["decorator"]),
        }
        print(f"  {backend} {name}: {results[name]['vs_decorator']:.3f}x decorator, "
              f"{results[name]['vs_floor']:.3f}x floor", file=sys.stderr, flush=True)
    inst = autotrace.install(["atp_rss"], backend=backend, tracer_provider=provider,
                             min_duration="1s")
    add = importlib.import_module("atp_rss.calls").add
    for _ in range(10_000):
        add(1, 2)
    gc.collect()
    first = rss_bytes()
    for _ in range(rss_calls - 10_000):
        add(1, 2)
    gc.collect()
    results["rss_growth_mb"] = (rss_bytes() - first) / 2**20
    inst.uninstall()
    provider.shutdown()
    return results


def report(all_results: dict[str, dict[str, Any]], quick: bool, rss_calls: int) -> str:
    version = ".".join(map(str, sys.version_info[:3]))
    lines = [f"# Policies benchmark, Python {version}", "",
             f"`python benchmarks/policies.py{' --quick' if quick else ''}`, "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Ratios are medians of "
             "side-by-side pairs in one process; the decorator is "
             "`@tracer.start_as_current_span`, the floor the cheapest hand-written span "
             "with the same six attributes.", "",
             "| workload | backend | ns per call | / decorator | / floor | goal |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    goals = {
        ("full", "wrapt"): "<= 1.0x floor", ("full", "monitoring"): "<= 1.0x floor",
        ("min_duration", "wrapt"): "<= 0.10x decorator",
        ("min_duration", "monitoring"): "<= 0.07x decorator",
        ("require_parent", "wrapt"): "<= 0.05x decorator",
        ("require_parent", "monitoring"): "<= 0.05x decorator",
        ("max_depth", "wrapt"): "—", ("max_depth", "monitoring"): "—",
        ("min_duration_metrics", "wrapt"): "<= 0.12x decorator",
        ("min_duration_metrics", "monitoring"): "<= 0.09x decorator",
        ("metrics_only", "wrapt"): "<= 0.12x decorator",
        ("metrics_only", "monitoring"): "<= 0.09x decorator",
    }
    floor_ratio = None
    for name, (_, _, label) in PHASES.items():
        for backend, results in all_results.items():
            if "skipped" in results:
                continue
            r = results[name]
            floor_ratio = r["floor_vs_decorator"]
            lines.append(f"| {label} | {backend} | {r['ns']:,.0f} | {r['vs_decorator']:.3f}x | "
                         f"{r['vs_floor']:.3f}x | {goals[(name, backend)]} |")
    if floor_ratio is not None:
        lines += ["", f"The floor itself: {floor_ratio:.2f}x the decorator."]
    lines += ["", f"RSS growth from 10,000 to {rss_calls:,} calls dropped by `min_duration`:"]
    for backend, results in all_results.items():
        if "skipped" in results:
            lines.append(f"- {backend}: skipped ({results['skipped']})")
        else:
            lines.append(f"- {backend}: {results['rss_growth_mb']:+.1f} MB (goal: within 5 MB)")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend", choices=["wrapt", "monitoring"], action="append")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    repeats, target_ns = (7, 2e6) if args.quick else (31, 8e6)
    rss_calls = 100_000 if args.quick else 1_000_000
    backends = args.backend or (["wrapt", "monitoring"] if sys.version_info >= (3, 12)
                                else ["wrapt"])
    results = {b: run_backend(b, repeats, target_ns, rss_calls) for b in backends}
    text = report(results, args.quick, rss_calls)
    print(text)
    if not args.no_write:
        out = HERE / "results" / f"policies-{sys.version_info[0]}.{sys.version_info[1]}.md"
        out.write_text(text)


if __name__ == "__main__":
    main()
