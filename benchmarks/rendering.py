"""What rendering one value costs, per kind of value (issue 23: value-aware redaction).

    python benchmarks/rendering.py       # prints, and writes results/rendering-X.Y.md

Rendering happens only for calls that are kept (recording spans), once per argument
and return value, through the same ``Formatter`` every backend uses; so the cost per
value here is what a kept call pays per attribute, whatever the backend. Each value is
rendered in a tight loop; the figure is the best of several repeats (ns per value).
Long strings are bounded by ``max_value_length`` (256): only the part that is kept is
rendered (and scanned). Times are the thread's CPU time (``time.thread_time``), so that
other processes on a shared machine count less.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
import timeit
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autotrace.config import make_config
from autotrace.describe.function import Formatter
from autotrace.describe.values import Renderer

HERE = Path(__file__).resolve().parent


@dataclasses.dataclass
class Order:
    id: int
    customer: str
    note: str


class Leaf:
    """An object of a class that is neither builtin nor a dataclass (a parser's node)."""


@dataclasses.dataclass
class Line:
    depth: int
    leaves: list[Leaf]
    order: Order


_PROSE = ("The quick brown fox jumps over the lazy dog; the token bucket refills at 10/s "
          "and the password reset page lives at https://example.com/reset?lang=en. ")
_JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4"
        "gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")

VALUES: dict[str, Any] = {
    "int `42`": 42,
    "short str `'alice'`": "alice",
    "str, 40 chars, no secret": "order 12345 shipped to warehouse north-3",
    "URL without credentials": "https://api.example.com/v1/items?page=2&limit=50",
    "DSN with a password": "postgresql://admin:s3cretPW@db.internal:5432/prod",
    "str with a JWT (`Bearer ...`)": "Bearer " + _JWT,
    "str, 10,000 chars of prose": (_PROSE * 80)[:10_000],
    "str, 10,000 hex chars (hashes)": ("9f86d081884c7d659a2feaa0c55ad015" * 313)[:10_000],
    "list of 50 short strings": [f"item-{i}" for i in range(50)],
    "dict of 10 str items": {f"key{i}": f"value number {i}" for i in range(10)},
    "dataclass, 3 fields": Order(7, "carol", "leave at the door"),
    "object of a plain class (`<module.Leaf object>`)": Leaf(),
    "dataclass: a list of 5 plain objects and a dataclass": Line(1, [Leaf() for _ in range(5)],
                                                                  Order(8, "dan", "")),
}


def measure(renders: dict[str, Callable[[Any], Any]], value: Any) -> dict[str, float]:
    """CPU ns per value for each renderer, samples interleaved (a loaded machine slows
    them alike), best of the repeats."""
    number = 1000
    best = dict.fromkeys(renders, float("inf"))
    for _ in range(9):
        for label, render in renders.items():
            took = timeit.timeit(lambda: render(value), number=number,  # noqa: B023
                                 timer=time.thread_time)
            best[label] = min(best[label], took / number * 1e9)
    return best


def first_sight(renderer: Renderer) -> Callable[[Any], Any]:
    """``attribute`` as if each value were new: the scrubber's memory of clean texts is
    emptied before each call (a detectors-off renderer gets the same empty call)."""
    scrubber = getattr(renderer.scrub, "__self__", None)
    clean: set[int] = scrubber._clean if scrubber is not None else set()
    attribute = renderer.attribute

    def render(value: Any) -> Any:
        clean.clear()
        return attribute(value)
    return render


CALL_MODULE = '''
def fetch(url, user, headers):
    return {"status": 200, "url": url, "user": user}
'''


def per_kept_call(unique: bool) -> dict[str, float]:
    """CPU ns of one kept, recording call of ``fetch`` (three arguments, a dict result)
    through the real SDK (a simple processor, a discarding exporter), detectors off and
    on: one installation at a time, so the phases alternate, best of each. ``unique``:
    every call gets another URL and request id (nothing seen before)."""
    import importlib
    import tempfile

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    import autotrace

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Discard()))
    root = Path(tempfile.mkdtemp())
    sys.path.insert(0, str(root))
    calls = 2000
    args = [(f"https://api.example.com/v1/items/{i if unique else 7}?page=2&limit=50", "carol",
             {"Accept": "application/json", "X-Request-Id": f"8f14e45f-{i if unique else 7}"})
            for i in range(calls)]
    best = {"detectors off": float("inf"), "default": float("inf")}
    for phase in range(12):
        label = "default" if phase % 2 else "detectors off"
        name = f"rendering_bench_{int(unique)}_{phase}"
        (root / f"{name}.py").write_text(CALL_MODULE)
        importlib.invalidate_caches()
        options: dict[str, Any] = {} if phase % 2 else {"redact_disable": ["all"]}
        autotrace.install([name], tracer_provider=provider, **options)
        try:
            fetch = importlib.import_module(name).fetch
            fetch(*args[0])
            t0 = time.thread_time()
            for call in args:
                fetch(*call)
            best[label] = min(best[label], (time.thread_time() - t0) / calls * 1e9)
        finally:
            autotrace.uninstall()
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    off = Formatter(make_config(["x"], environ={}, redact_disable=["all"])).renderer
    on = Formatter(make_config(["x"], environ={})).renderer
    renders = {"off": first_sight(off), "new": first_sight(on), "seen": on.attribute}
    version = ".".join(map(str, sys.version_info[:2]))
    lines = [f"# Rendering cost per value, Python {platform.python_version()}", "",
             f"`python benchmarks/rendering.py`, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} "
             "UTC. CPU ns per value (`Renderer.attribute`, best of 9 interleaved samples "
             "of 1,000), max_value_length 256. *detectors off* is "
             "`redact_disable=['all']`: the rendering path as it was before value-aware "
             "redaction (names still redact); *first sight* scans the rendered text; "
             "*seen before*: a text found clean before costs a hash lookup.", "",
             "| value | detectors off | first sight | added | seen before | added |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, value in VALUES.items():
        best = measure(renders, value)
        lines.append(f"| {name} | {best['off']:,.0f} | {best['new']:,.0f} "
                     f"| {best['new'] - best['off']:+,.0f} | {best['seen']:,.0f} "
                     f"| {best['seen'] - best['off']:+,.0f} |")
    lines += ["", "One kept call of `fetch(url, user, headers)` returning a dict, through the "
              "real SDK (simple processor, discarding exporter), CPU ns per call, best of 6 "
              "alternating installations of 2,000 calls:", "",
              "| arguments | detectors off | default | added |", "| --- | ---: | ---: | ---: |"]
    for unique in (True, False):
        call = per_kept_call(unique)
        lines.append(f"| {'new each call' if unique else 'the same each call'} "
                     f"| {call['detectors off']:,.0f} | {call['default']:,.0f} | "
                     f"{call['default'] - call['detectors off']:+,.0f} "
                     f"({(call['default'] / call['detectors off'] - 1) * 100:+.1f}%) |")
    text = "\n".join(lines) + "\n"
    out = Path(args.out) if args.out else HERE / "results" / f"rendering-{version}.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
