"""Instructions per traced call, counted by ``valgrind --tool=callgrind``.

    python benchmarks/callgrind_metrics.py                  # every contender, both backends
    python benchmarks/callgrind_metrics.py --only metrics_dropped --backend wrapt

Each measurement is two runs of the same child process under callgrind, one
making N calls of a two-argument function and one making 2N; the difference
of the totals, over N, is the cost of one call (set-up, import and exit
cancel out). ``PYTHONHASHSEED=0``: the count is the same from run to run, and
does not depend on the load of the machine. With metrics on, the child
collects once after a warm-up (the first calls of a function) and once at the
end, so the hand-over to the SDK is part of the count.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

SOURCE = '''
def add(a, b):
    return a + b


def parent(f, loops):
    for _ in range(loops):
        f(1, 2)
'''

#: name: (install options, calls made inside a traced parent, label)
CONTENDERS: dict[str, tuple[dict[str, object], bool, str]] = {
    "dropped": ({"min_duration": "1s"}, True,
                "dropped by `min_duration` (inside a pending call)"),
    "metrics_dropped": ({"min_duration": "1s", "metrics": True}, True,
                        "dropped by `min_duration`, metrics on"),
    "metrics_only": ({"spans": False, "metrics": True}, False,
                     "metrics only (`spans=False`)"),
}


def child(calls: int, contender: str, backend: str, root: str) -> None:
    """The measured process: install, import, ``calls`` calls, collect."""
    sys.path.insert(0, root)
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    import autotrace

    class Discard(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    options, inside, _label = CONTENDERS[contender]
    reader = None
    if options.get("metrics"):
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        options = {**options, "meter_provider": MeterProvider(metric_readers=[reader])}
    autotrace.install(["atb_instr"], backend=backend, tracer_provider=provider, **options)
    import atb_instr  # type: ignore[import-not-found]

    add, parent = atb_instr.add, atb_instr.parent
    parent(add, 100) if inside else [add(1, 2) for _ in range(100)]  # warm-up
    if reader is not None:
        reader.get_metrics_data()
    if inside:
        parent(add, calls)
    else:
        for _ in range(calls):
            add(1, 2)
    if reader is not None:
        reader.get_metrics_data()
    autotrace.uninstall()
    provider.shutdown()


def count(calls: int, contender: str, backend: str, root: str) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, __file__, "--child", str(calls), contender, backend, root],
        env=env, capture_output=True, text=True, timeout=1800, check=True)
    found = re.search(r"Collected\s*:\s*(\d+)", out.stderr)
    if found is None:
        raise RuntimeError(out.stderr[-2000:])
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--only", action="append", choices=list(CONTENDERS))
    parser.add_argument("--backend", action="append", choices=["wrapt", "monitoring"])
    parser.add_argument("--calls", type=int, default=4000)
    args = parser.parse_args()
    if args.child:
        calls, contender, backend, root = args.child
        child(int(calls), contender, backend, root)
        return
    backends = args.backend or (["wrapt", "monitoring"] if sys.version_info >= (3, 12)
                                else ["wrapt"])
    with tempfile.TemporaryDirectory() as root:
        Path(root, "atb_instr.py").write_text(SOURCE)
        print(f"| call of `add(a, b)`, Python {sys.version.split()[0]} | "
              + " | ".join(backends) + " |")
        print("| --- |" + " ---: |" * len(backends))
        for name in args.only or list(CONTENDERS):
            row = []
            for backend in backends:
                one = count(args.calls, name, backend, root)
                two = count(2 * args.calls, name, backend, root)
                row.append(f"{(two - one) / args.calls:,.0f}")
            print(f"| {CONTENDERS[name][2]} | " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
