"""Import cost of a module of 1,000 functions, in instructions (callgrind).

The issue's target: with a warm cache and after autotrace's own one-time imports, the
import of a 1,000-function module costs at most 1.5x the plain import, both backends.

Two processes per mode each install autotrace (a real SDK ``TracerProvider``) and
import a first module of the same shape (autotrace's own imports, wrapt, the rewrite
cache's reader); the second then imports ``gen1000b``. The figure is the difference of
the two counts. Bytecode and the rewrite cache are written and warm: each pair runs
twice and the second pair counts. Deterministic, so one run is enough.

Two figures per mode: the import itself (the children leave with ``os._exit``, so the
interpreter's teardown is not counted: the target's figure), and the whole process
(teardown included: freeing what the import made, wrappers and all).

    python benchmarks/imports.py [--modes plain,wrapt,monitoring] [--core compiled]

``--package flask --patterns flask,werkzeug,jinja2`` measures a real, installed package
instead: every child imports autotrace and the SDK (in ``plain`` too, uninstalled, so
the dependencies they share with the package are loaded alike), the modes install with
those patterns and ``min_duration=1.0`` (the calls the import makes are dropped unless
they raise), and the figure is ``import flask`` with and without. A real package's
import runs much of its own code, so this is not the per-def figure above.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFS = 1000
SHAPE = "def f{i}(a, b=1, *args, **kw):\n    '''doc'''\n    return a + b + {i}\n\n"

CHILD = """
import sys
sys.path.insert(0, {root!r})
mode, core, second, teardown = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1"
if mode != "plain":
    from opentelemetry.sdk.trace import TracerProvider
    import autotrace
    autotrace.install(patterns=["gen1000", "gen1000b"], backend=mode, core=core,
                      tracer_provider=TracerProvider())
import gen1000  # one-time imports
if second:
    import gen1000b
if not teardown:
    import os
    sys.stdout.flush()
    os._exit(0)
"""


CHILD_PACKAGE = """
import sys
mode, core, second, teardown = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1"
from opentelemetry.sdk.trace import TracerProvider
import autotrace
if mode != "plain":
    autotrace.install(patterns={patterns!r}, backend=mode, core=core,
                      tracer_provider=TracerProvider(), min_duration=1.0)
if second:
    import {package}
if not teardown:
    import os
    sys.stdout.flush()
    os._exit(0)
"""


def _count(script: Path, mode: str, core: str, second: bool, teardown: bool) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         str(script), mode, core, "1" if second else "0", "1" if teardown else "0"],
        capture_output=True, text=True, env=env, check=True)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise SystemExit(f"no callgrind total for {mode}: {out.stderr[-2000:]}")
    return int(found.group(1))


def measure(root: Path, mode: str, core: str, teardown: bool) -> int:
    """Instructions of importing gen1000b (warm: the second of two pairs)."""
    script = root / "child.py"
    figure = 0
    for _ in range(2):
        figure = (_count(script, mode, core, True, teardown)
                  - _count(script, mode, core, False, teardown))
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="plain,wrapt,monitoring")
    parser.add_argument("--core", default="auto", choices=["auto", "compiled", "python"])
    parser.add_argument("--package", help="an installed package to import instead")
    parser.add_argument("--patterns", help="with --package: the patterns (default: it)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (apt install valgrind)")
    root = Path(tempfile.mkdtemp(prefix="autotrace-imports-"))
    try:
        if args.package:
            patterns = (args.patterns or args.package).split(",")
            (root / "child.py").write_text(CHILD_PACKAGE.format(patterns=patterns,
                                                                package=args.package))
            what = f"`import {args.package}`, patterns {','.join(patterns)}"
        else:
            body = "".join(SHAPE.format(i=i) for i in range(DEFS))
            for name in ("gen1000", "gen1000b"):
                (root / f"{name}.py").write_text(body)
            (root / "child.py").write_text(CHILD.format(root=str(root)))
            what = f"import of {DEFS} defs"
        plain: list[int] = []
        print(f"| {what} (Python {sys.version.split()[0]}, core {args.core})"
              " | import | / plain | with teardown | / plain |\n"
              "| --- | ---: | ---: | ---: | ---: |")
        for mode in args.modes.split(","):
            figures = [measure(root, mode, args.core, teardown) for teardown in (False, True)]
            if mode == "plain":
                plain = figures
            cells = []
            for i, figure in enumerate(figures):
                ratio = f"{figure / plain[i]:.2f}x" if plain else "-"
                cells.append(f"{figure // 1000:,} k | {ratio}")
            print(f"| {mode} | {' | '.join(cells)} |", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
