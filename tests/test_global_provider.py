"""No provider at install(): calls pass through until a global SDK provider is set.

The global provider can be set once per process, so each case runs in a child.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import autotrace
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

autotrace.install(["late_mod"], backend={backend!r})
import late_mod

assert late_mod.add(1, 2) == 3  # no provider yet: passes through
if {backend!r} == "monitoring":  # dormant: not a single event is set yet
    tool = [i for i in range(6) if sys.monitoring.get_tool(i) == "autotrace"][0]
    assert sys.monitoring.get_events(tool) == 0
    assert sys.monitoring.get_local_events(tool, late_mod.add.__code__) == 0
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
assert late_mod.add(2, 3) == 5
spans = exporter.get_finished_spans()
print([(s.name, s.attributes["code.function.return.value"]) for s in spans])
"""


def test_spans_start_once_a_global_provider_is_set(tmp_path: Path, backend: str) -> None:
    (tmp_path / "late_mod.py").write_text("def add(a, b):\n    return a + b\n")
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(SCRIPT).format(root=str(tmp_path), backend=backend))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[('add', 5)]"
