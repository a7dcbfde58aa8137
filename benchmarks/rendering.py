"""What rendering one value costs, per kind of value (issue 23: value-aware redaction).

    python benchmarks/rendering.py       # prints, and writes results/rendering-X.Y.md

Rendering happens only for calls that are kept (recording spans), once per argument
and return value, through the same ``Formatter`` every backend uses; so the cost per
value here is what a kept call pays per attribute, whatever the backend. Each value is
rendered in a tight loop; the figure is the best of several repeats (ns per value).
Long strings are bounded by ``max_value_length`` (256): only the part that is kept is
rendered (and scanned).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import timeit
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autotrace.config import make_config
from autotrace.describe.function import Formatter

HERE = Path(__file__).resolve().parent


@dataclasses.dataclass
class Order:
    id: int
    customer: str
    note: str


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
}


def measure(renders: dict[str, Callable[[Any], Any]], value: Any) -> dict[str, float]:
    """ns per value for each renderer, samples interleaved (a loaded machine slows
    both alike), best of the repeats."""
    number = 1000
    best = dict.fromkeys(renders, float("inf"))
    for _ in range(9):
        for label, render in renders.items():
            took = timeit.timeit(lambda: render(value), number=number)  # noqa: B023
            best[label] = min(best[label], took / number * 1e9)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    parser.parse_args()
    off = Formatter(make_config(["x"], environ={}, redact_disable=["all"])).renderer
    on = Formatter(make_config(["x"], environ={})).renderer
    renders = {"detectors off": off.attribute, "default": on.attribute}
    version = ".".join(map(str, sys.version_info[:2]))
    lines = [f"# Rendering cost per value, Python {platform.python_version()}", "",
             f"`python benchmarks/rendering.py`, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} "
             "UTC. ns per value (`Renderer.attribute`, best of 9 interleaved samples of "
             "1,000), max_value_length 256. *detectors off* is "
             "`redact_disable=['all']`: the rendering path as it was before value-aware "
             "redaction (names still redact); *default* scans every rendered text.", "",
             "| value | detectors off | default | added |",
             "| --- | ---: | ---: | ---: |"]
    for name, value in VALUES.items():
        best = measure(renders, value)
        lines.append(f"| {name} | {best['detectors off']:,.0f} | {best['default']:,.0f} "
                     f"| {best['default'] - best['detectors off']:+,.0f} |")
    text = "\n".join(lines) + "\n"
    out = Path(args_out) if (args_out := parser.parse_args().out) else (
        HERE / "results" / f"rendering-{version}.md")
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
