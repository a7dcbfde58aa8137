"""The strategy comparison on the running interpreter: measure, then write ``results/X.Y.md``.

Run through ``run.py`` (which makes the venvs), or directly from a venv that
has ``pip install -e '.[bench]'``. Each provider setup is measured in a fresh
``worker.py`` process (a process holds one global provider, and Logfire
installs its own); the ratios in a table all come from one such process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKER = HERE / "worker.py"

SETUPS = {
    "nosdk": "No SDK (API only, no-op)",
    "sampled": "SDK, ALWAYS_OFF sampler",
    "recording": "SDK recording: BatchSpanProcessor, discarding exporter",
}
COLUMNS = {
    "plain": "plain call",
    "decorator": "hand-written decorator",
    "wrapt": "autotrace wrapt",
    "monitoring": "autotrace monitoring",
    "logfire": "Logfire auto-tracing",
}
WORKLOAD_LABELS = {
    "function": "function `add(1, 2)`",
    "method": "method `obj.method(1, 2)`",
    "generator": "generator, 10 items consumed",
    "async": "`async def`, driven with `send(None)`",
    "recursive": "recursive `depth(9)`: 10 nested calls",
    "nonmatching": "non-matching function in a traced module",
}


# -- running the workers -------------------------------------------------------------------------


def run_worker(args: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        subprocess.run([sys.executable, str(WORKER), *args, "--json", str(out)], check=True)
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def measure_all(quick: bool) -> dict[str, Any]:
    repeats = ["--repeats", "5", "--sample-ms", "2"] if quick else ["--repeats", "41",
                                                                     "--sample-ms", "6"]
    calls = ["--calls", "100000"] if quick else []
    results: dict[str, Any] = {"calls": {}, "rss": {}, "quick": quick,
                               "when": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"}
    for setup in SETUPS:
        results["calls"][setup] = run_worker(["calls", "--provider", setup, *repeats])
    results["imports"] = run_worker(
        ["imports", "--repeats", "5" if quick else "21"])
    for contender in ("decorator", "wrapt", "monitoring"):
        results["rss"][contender] = run_worker(["rss", "--contender", contender, *calls])
    return results


# -- formatting ---------------------------------------------------------------------------------


def paired(mine: list[float], theirs: list[float]) -> list[float]:
    """Ratios of samples taken side by side.

    Load from other processes comes and goes on a shared machine; it hits both
    samples of a pair alike, so their ratio is steadier than a ratio of medians.
    """
    return [a / b for a, b in zip(mine, theirs, strict=True)]


def short(reason: str | None) -> str | None:
    """The first clause of a skip reason (exception messages can run long)."""
    return reason.split(";")[0].split(". ")[0] if reason else reason


def fmt_ns(ns: float) -> str:
    if ns < 1000:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.3g} µs"
    return f"{ns / 1e6:.3g} ms"


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x"


@dataclass
class Target:
    label: str
    measured: float | None  # None: the contender did not run
    goal: float
    unit: str = "x"
    why_missing: str = ""
    spread: tuple[float, float] | None = None  # quartiles of the paired ratios

    @classmethod
    def of(cls, label: str, ratios: list[float] | None, goal: float, why: str) -> Target:
        if not ratios:
            return cls(label, None, goal, why_missing=why)
        q1, median, q3 = statistics.quantiles(ratios, n=4)
        return cls(label, median, goal, spread=(q1, q3))

    def row(self) -> str:
        goal = f"<= {self.goal:g}{'x' if self.unit == 'x' else ' ' + self.unit}"
        if self.measured is None:
            return f"| {self.label} | n/a | {goal} | skipped (see notes) |"
        shown = (fmt_ratio(self.measured) if self.unit == "x"
                 else f"{self.measured:+.1f} {self.unit}")
        if self.spread:
            shown += f" ({self.spread[0]:.3g}-{self.spread[1]:.3g})"
        verdict = "PASS" if self.measured <= self.goal else "MISS"
        return f"| {self.label} | {shown} | {goal} | {verdict} |"


class Calls:
    """Medians of one provider setup's process, per phase and pooled."""

    def __init__(self, result: dict[str, Any]) -> None:
        self.phases = {p["contender"]: p for p in result["phases"]}

    def skipped(self, contender: str) -> str | None:
        phase = self.phases.get(contender)
        return "not run" if phase is None else short(phase["skipped"])

    def median(self, phase: str, contender: str, workload: str) -> float | None:
        values = self.phases.get(phase, {}).get("cells", {}).get(contender, {}).get(workload)
        return statistics.median(values) if values else None

    def pooled(self, contender: str, workload: str) -> float | None:
        values = [v for p in self.phases.values()
                  for v in p.get("cells", {}).get(contender, {}).get(workload, [])]
        return statistics.median(values) if values else None

    def ratios(self, contender: str, workload: str, base: str) -> list[float] | None:
        """Contender over ``base`` (plain/decorator), paired within the contender's phase."""
        cells = self.phases.get(contender, {}).get("cells", {})
        mine = cells.get(contender, {}).get(workload)
        theirs = cells.get(base, {}).get(workload)
        return paired(mine, theirs) if mine and theirs else None

    def ratio(self, contender: str, workload: str, base: str) -> float | None:
        found = self.ratios(contender, workload, base)
        return statistics.median(found) if found else None

    def cell(self, contender: str, workload: str) -> str:
        if contender in ("plain", "decorator"):
            value = self.pooled(contender, workload)
            return "n/a" if value is None else fmt_ns(value)
        value = self.median(contender, contender, workload)
        if value is None:
            return "n/a" if self.skipped(contender) is None else "skipped"
        base = "plain" if workload == "nonmatching" else "decorator"
        ratio = self.ratio(contender, workload, base)
        label = "plain" if base == "plain" else "dec"
        return f"{fmt_ns(value)} ({fmt_ratio(ratio or 0)} {label})"

    def table(self) -> list[str]:
        lines = ["| workload | " + " | ".join(COLUMNS.values()) + " |",
                 "| --- |" + " ---: |" * len(COLUMNS)]
        for workload, label in WORKLOAD_LABELS.items():
            cells = [self.cell(c, workload) for c in COLUMNS]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        return lines


def versions() -> str:
    parts = []
    for dist in ("otel-autotrace", "opentelemetry-sdk", "wrapt", "logfire"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return ", ".join(parts)


def targets(results: dict[str, Any]) -> list[Target]:
    nosdk = Calls(results["calls"]["nosdk"])
    sampled = Calls(results["calls"]["sampled"])
    recording = Calls(results["calls"]["recording"])
    out: list[Target] = []
    for backend in ("wrapt", "monitoring"):
        out.append(Target.of(f"recording, args + return captured: {backend} / decorator",
                             recording.ratios(backend, "function", "decorator"), 1.0,
                             recording.skipped(backend) or ""))
    for backend in ("wrapt", "monitoring"):
        ours = recording.ratio(backend, "function", "decorator")
        theirs = recording.ratio("logfire", "function", "decorator")
        why = recording.skipped(backend) or recording.skipped("logfire") or ""
        out.append(Target(f"recording: {backend} / Logfire (each over its decorator)",
                          ours / theirs if ours and theirs else None, 0.35, why_missing=why))
    for backend, goal in (("wrapt", 25.0), ("monitoring", 5.0)):
        out.append(Target.of(f"no SDK: {backend} / plain call",
                             nosdk.ratios(backend, "function", "plain"), goal,
                             nosdk.skipped(backend) or ""))
    for backend in ("wrapt", "monitoring"):
        out.append(Target.of(f"sampled out: {backend} / decorator",
                             sampled.ratios(backend, "function", "decorator"), 0.5,
                             sampled.skipped(backend) or ""))
    for backend in ("wrapt", "monitoring"):
        out.append(Target.of(f"non-matching function: {backend} / plain call",
                             recording.ratios(backend, "nonmatching", "plain"), 1.05,
                             recording.skipped(backend) or ""))
    imports = {p["contender"]: p for p in results["imports"]["phases"]}
    for backend, goal in (("wrapt", 1.5), ("monitoring", 1.2)):
        phase = imports[backend]
        samples = phase["samples"]
        found = paired(samples[backend], samples["plain"]) if not phase["skipped"] else None
        out.append(Target.of(f"import of the 1,000-function module: {backend} / plain", found,
                             goal, short(phase["skipped"]) or ""))
    for backend in ("wrapt", "monitoring"):
        rss = results["rss"][backend]
        growth = (rss["rss_all"] - rss["rss_first"]) / 2**20 if not rss["skipped"] else None
        out.append(Target(f"RSS growth, 10k to 1M recorded calls: {backend}", growth, 5.0,
                          unit="MB", why_missing=rss["skipped"] or ""))
    return out


def report(results: dict[str, Any]) -> str:
    impl = platform.python_implementation()
    lines = [
        f"# Strategy comparison: {impl} {platform.python_version()}",
        "",
        f"`python benchmarks/run.py`{' --quick' if results['quick'] else ''}, "
        f"{results['when']}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs (shared machine). {versions()}.",
        "",
        "Each cell: the median time per call over samples of a few ms each, and its ratio "
        "to the hand-written `@tracer.start_as_current_span` decorator (`dec`) or to the "
        "plain call (`plain`): the median of the ratios of samples taken side by side, in "
        "the same process. The plain and decorator columns pool every phase of the process.",
        "",
        "## Targets",
        "",
        "Per-call targets use the function workload `add(1, 2)`; in parentheses, the "
        "quartiles of the paired ratios (how noisy the machine was).",
        "",
        "| target | measured | goal | result |",
        "| --- | ---: | ---: | --- |",
    ]
    lines += [t.row() for t in targets(results)]
    notes: dict[str, None] = {}  # ordered and without repeats
    for setup, title in SETUPS.items():
        calls = Calls(results["calls"][setup])
        lines += ["", f"## {title}", "", *calls.table()]
        floor = calls.median("baseline", "floor", "function")
        deco = calls.median("baseline", "decorator", "function")
        if floor and deco and setup != "nosdk":
            lines += ["", f"Floor: the same span autotrace makes (6 attributes) written by "
                      f"hand with `start_span`/`attach`/`detach`/`end`: {fmt_ns(floor)}, "
                      f"{fmt_ratio(floor / deco)} the decorator."]
        base = calls.median("baseline", "plain", "function")
        slow = []
        for contender in ("wrapt", "monitoring", "logfire"):
            skipped = calls.skipped(contender)
            if skipped:
                notes[f"{COLUMNS[contender]} skipped: {skipped}."] = None
                continue
            during = calls.median(contender, "plain", "function")
            if base and during:
                slow.append(f"{contender} {fmt_ratio(during / base)}")
        if slow:
            lines += ["", "Plain call in an untraced module while each contender is "
                      "installed, over the same before any install: " + ", ".join(slow) + "."]
    lines += ["", "## Import of a generated module: 500 functions, 100 classes x 5 methods", "",
              "| contender | plain import | traced import | ratio |",
              "| --- | ---: | ---: | ---: |"]
    for phase in results["imports"]["phases"]:
        name = phase["contender"]
        if phase["skipped"]:
            lines.append(f"| {COLUMNS[name]} | | skipped | |")
            notes[f"{COLUMNS[name]} skipped: {short(phase['skipped'])}."] = None
            continue
        plain = statistics.median(phase["samples"]["plain"])
        traced = statistics.median(phase["samples"][name])
        ratio = statistics.median(paired(phase["samples"][name], phase["samples"]["plain"]))
        lines.append(f"| {COLUMNS[name]} | {plain:.2f} ms | {traced:.2f} ms | "
                     f"{fmt_ratio(ratio)} |")
    lines += ["", "## RSS, recording setup, processor drained", "",
              "| contender | after 10,000 calls | after all calls | growth |",
              "| --- | ---: | ---: | ---: |"]
    for name, rss in results["rss"].items():
        if rss["skipped"]:
            lines.append(f"| {COLUMNS[name]} | | skipped | |")
            continue
        first, last = rss["rss_first"] / 2**20, rss["rss_all"] / 2**20
        lines.append(f"| {COLUMNS[name]} ({rss['calls']:,} calls) | {first:.1f} MB | "
                     f"{last:.1f} MB | {last - first:+.1f} MB |")
    lines += ["", "## Notes", "",
              "- The hand-written generator wraps its body in `with "
              "tracer.start_as_current_span(...)`: the decorator would end the span when the "
              "generator object is created.",
              "- Logfire: `logfire.configure(send_to_logfire=False, console=False, "
              "metrics=False, scrubbing=False, add_baggage_to_attributes=False, "
              "additional_span_processors=[BatchSpanProcessor(discarding exporter)])`, "
              "its leanest; it leaves generators untraced and selects modules, not functions.",
              ]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def summary(raw_files: list[Path]) -> str:
    """One table of every target's measured value per interpreter (for the README)."""
    runs = {path.stem.removeprefix("raw-"): targets(json.loads(path.read_text()))
            for path in sorted(raw_files, key=lambda p: tuple(map(int, p.stem[4:].split("."))))}
    if not runs:
        return "no raw results yet: run benchmarks/run.py"
    lines = ["| target (function workload) | " + " | ".join(runs) + " | goal |",
             "| --- |" + " ---: |" * (len(runs) + 1)]
    for i, first in enumerate(next(iter(runs.values()))):
        cells = []
        for found in runs.values():
            t = found[i]
            if t.measured is None:
                cells.append("n/a")
            else:
                value = fmt_ratio(t.measured) if t.unit == "x" else f"{t.measured:+.1f} MB"
                cells.append(value if t.measured <= t.goal else f"**{value}**")
        goal = f"{first.goal:g}x" if first.unit == "x" else f"{first.goal:g} MB"
        lines.append(f"| {first.label} | " + " | ".join(cells) + f" | ≤ {goal} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few samples: a smoke test")
    minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
    parser.add_argument("--out", type=Path, default=HERE / "results" / f"{minor}.md")
    parser.add_argument("--raw", type=Path, default=HERE / ".work" / f"raw-{minor}.json",
                        help="where the raw samples go (JSON)")
    parser.add_argument("--from-raw", action="store_true",
                        help="only rewrite the report from the raw samples of the last run")
    parser.add_argument("--summary", action="store_true",
                        help="print the targets of every interpreter's last run, then exit")
    args = parser.parse_args()
    if args.summary:
        print(summary(list((HERE / ".work").glob("raw-*.json"))))
        return
    if args.from_raw:
        results = json.loads(args.raw.read_text())
    else:
        results = measure_all(args.quick)
        args.raw.parent.mkdir(exist_ok=True)
        args.raw.write_text(json.dumps(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(results))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
