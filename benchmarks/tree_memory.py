"""Memory of the call tree (the ``autotrace`` command's default output) for one big trace.

``python benchmarks/tree_memory.py [SPANS ...]`` runs, for each size, a fresh
process in which a traced ``root()`` calls ``mid()`` which calls ``leaf(i)``
SPANS times, through a real SDK provider into ``CallTreeProcessor``, and prints
the peak RSS growth of that process over the same run with tracing into a
processor that discards (so the SDK's own cost cancels out), and the tree's
first lines. Issue 13.6: 120,000 spans cost 336 MB when every ``ReadableSpan``
was buffered; the target is <= 100 MB whatever the size.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import textwrap

MODULE = '''
def leaf(i):
    return i


def mid(n):
    for i in range(n):
        leaf(i)
    return n


def root(n):
    return mid(n)
'''

CHILD = '''
import io, resource, sys
sys.path.insert(0, sys.argv[1])
import autotrace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from autotrace.zerocode.console import CallTreeProcessor
out = io.StringIO()
processor = CallTreeProcessor(out) if sys.argv[3] == "tree" else SpanProcessor()
provider = TracerProvider()
provider.add_span_processor(processor)
autotrace.install(["treemem"], tracer_provider=provider)
import treemem
treemem.root(10)  # warm up: first calls describe the functions
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
treemem.root(int(sys.argv[2]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024)  # KiB on Linux
print("\\n".join(out.getvalue().splitlines()[-7:]), file=sys.stderr)
'''


def growth(directory: str, spans: int, mode: str) -> tuple[float, str]:
    done = subprocess.run([sys.executable, "-c", CHILD, directory, str(spans), mode],
                          capture_output=True, text=True, check=True)
    return float(done.stdout.strip()), done.stderr


def main() -> None:
    sizes = [int(arg) for arg in sys.argv[1:]] or [120_000]
    with tempfile.TemporaryDirectory() as directory:
        with open(os.path.join(directory, "treemem.py"), "w") as handle:
            handle.write(textwrap.dedent(MODULE))
        for spans in sizes:
            tree, text = growth(directory, spans, "tree")
            plain, _ = growth(directory, spans, "discard")
            print(f"{spans:,} spans: peak RSS +{tree:.1f} MB with the call tree, "
                  f"+{plain:.1f} MB discarding: the tree costs {tree - plain:.1f} MB")
            print(textwrap.indent(text.rstrip(), "    "))


if __name__ == "__main__":
    assert resource  # Linux/macOS only (ru_maxrss)
    main()
