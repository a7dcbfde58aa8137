"""A real program nobody here wrote, plain and traced: the pure-Python build of black.

    python benchmarks/real_program.py                 # this Python, 5 rounds
    python benchmarks/real_program.py --rounds 3 --only plain,min_duration

Black (the ``py3-none-any`` wheel from the package index, so that its code is
Python and can be traced; the default wheel is compiled with mypyc) reformats
one of its own large modules (``black/linegen.py``, ~2,600 lines) to a line
length of 60, with ``--diff`` so nothing is written and its cache is not used.
Each contender runs it as a whole process under the ``autotrace`` command with
the patterns ``black,blib2to3`` (its two packages) and the default output (the
call tree on stderr, sent to /dev/null):

* ``plain``: no autotrace;
* ``cprofile``: no autotrace, black under ``python -m cProfile -o /dev/null`` (a C
  profiler that records every call: the bar a per-call recorder is held to);
* ``full``: every call a span (only with ``--only full`` or ``--lines``: on the
  whole file it takes over ten minutes a run);
* ``min_duration``: ``--min-duration 1ms``;
* ``suppress_hot``: ``--suppress-hot``;
* ``metrics_min_duration``: ``--metrics --min-duration 1ms`` (metrics to the console,
  on stderr, at exit);
* ``metrics_only``: ``--no-spans --metrics``;
* extra contenders given with ``--extra NAME='FLAGS'``.

Bytecode is written as on a user's machine (``PYTHONDONTWRITEBYTECODE`` is removed),
and each contender runs once before the timed rounds, so the rewritten modules come
from autotrace's cache as they would from the second run on.

*kept spans*: the sum of the span counts in the call tree's headers
(``autotrace: trace ... (N spans, ...)``) written by each contender's warm-up run.
The header line also says which core the venv's autotrace runs (``--version``).

Rounds alternate the contenders (the order rotates) and the ratios are medians
of each round's pair with ``plain``, so a noisy neighbour hits both alike. Wall
time, CPU time (user + system, the process and its children) and the peak RSS of
the process are measured from the outside (``os.wait4``); on a loaded machine the
CPU-time ratios move far less than the wall-time ones. A venv with the project
(editable: it runs ``src/`` and the compiled core built there) and black is made once
in ``benchmarks/.work/real-X.Y``.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BLACK = "black==26.10.1"
PATTERNS = "black,blib2to3"
CONTENDERS: dict[str, list[str] | None] = {
    "plain": None,
    "full": [],
    "min_duration": ["--min-duration", "1ms"],
    "suppress_hot": ["--suppress-hot"],
    "metrics_min_duration": ["--metrics", "--min-duration", "1ms"],
    "metrics_only": ["--no-spans", "--metrics"],
}
#: Contenders that run black under another Python tool instead of autotrace.
PROFILERS: dict[str, list[str]] = {"cprofile": ["-m", "cProfile", "-o", os.devnull]}


def ensure_venv() -> Path:
    """A venv with autotrace (editable) and black's pure-Python wheel."""
    where = HERE / ".work" / f"real-{sys.version_info[0]}.{sys.version_info[1]}"
    python = where / "bin" / "python"
    if (where / "ready").exists():
        return python
    venv.EnvBuilder(with_pip=True, clear=True).create(where)
    wheels = Path(tempfile.mkdtemp())
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    subprocess.run([str(python), "-m", "pip", "download", "-q", "--no-deps", "--only-binary",
                    ":all:", "--platform", "any", "--python-version", version, BLACK,
                    "-d", str(wheels)], check=True)
    wheel = next(wheels.glob("black-*-py3-none-any.whl"))
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", str(REPO), str(wheel)],
                   check=True)  # black's own dependencies come with it
    (where / "ready").write_text("")
    return python


def first_lines(path: Path, count: int) -> Path:
    """A copy of the first ``count`` lines of ``path``, cut back to a whole statement."""
    import ast

    lines = path.read_text().splitlines()[:count]
    while lines:
        try:
            ast.parse("\n".join(lines))
            break
        except SyntaxError:
            lines.pop()
    out = Path(tempfile.mkdtemp()) / "linegen_part.py"
    out.write_text("\n".join(lines) + "\n")
    return out


def run_once(command: list[str], env: dict[str, str], stderr: Path | None = None
             ) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MB) and CPU seconds of one process; its stderr to
    ``stderr`` if given."""
    with open(os.devnull, "wb") as devnull, open(stderr or os.devnull, "wb") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=devnull, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):  # 1: black found changes
        raise SystemExit(f"failed: {shlex.join(command)}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def kept_spans(call_tree: Path) -> int:
    """Spans in a call tree on stderr: the sum of its traces' header counts."""
    return sum(int(n.replace(",", "")) for n in re.findall(
        r"^autotrace: trace \S+ \(([\d,]+) spans?,", call_tree.read_text(errors="replace"),
        re.M))  # "46,750 spans": the header groups thousands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", help="comma-separated contenders (plain always runs)")
    parser.add_argument("--extra", action="append", default=[],
                        help="NAME='autotrace flags', e.g. hot='--suppress-hot'")
    parser.add_argument("--backend", default="wrapt")
    parser.add_argument("--lines", type=int, default=0,
                        help="reformat only the first N lines of linegen.py (whole "
                             "statements), for a quicker run")
    args = parser.parse_args()
    contenders: dict[str, list[str] | None] = {**CONTENDERS, **PROFILERS}
    for extra in args.extra:
        name, _, flags = extra.partition("=")
        contenders[name] = shlex.split(flags)
    # "full" (every call a span) takes over ten minutes a run on the whole file: only
    # when asked for (--only full, or with --lines).
    keep = {"plain", *args.only.split(",")} if args.only else set(contenders) - (
        set() if args.lines else {"full"})
    contenders = {k: v for k, v in contenders.items() if k in keep}
    python = ensure_venv()
    source = python.parent.parent / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    target = next(source.glob("site-packages/black/linegen.py"))
    if args.lines:
        target = first_lines(target, args.lines)
    black = [str(python), "-m", "black", "--line-length", "60", "--diff", "--quiet",
             str(target)]
    env = dict(os.environ, BLACK_CACHE_DIR=tempfile.mkdtemp())
    env.pop("OTEL_TRACES_EXPORTER", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in contenders}
    names = list(contenders)

    def command_of(name: str) -> list[str]:
        flags = contenders[name]
        if name in PROFILERS:
            return [str(python), *PROFILERS[name], *black[1:]]
        return black if flags is None else [
            str(python), "-m", "autotrace", "-p", PATTERNS, "--backend", args.backend,
            *flags, *black]

    kept: dict[str, int] = {}
    tree = Path(tempfile.mkdtemp()) / "stderr"
    for name in names:  # warm-up: bytecode and rewrite caches; the kept spans
        run_once(command_of(name), env, tree)
        if contenders[name] is not None and name not in PROFILERS:
            kept[name] = kept_spans(tree)
    for round_ in range(args.rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(run_once(command_of(name), env))
            print(f"  round {round_ + 1}: {name} {results[name][-1][0]:.2f} s "
                  f"(CPU {results[name][-1][2]:.2f} s)", file=sys.stderr, flush=True)
    plain = results["plain"]
    version = subprocess.run([str(python), "-m", "autotrace", "--version"], capture_output=True,
                             text=True).stdout.strip()
    lines = [f"`python benchmarks/real_program.py {shlex.join(sys.argv[1:])}`; {version}", "",
             f"black {BLACK.split('==')[1]} reformatting black/linegen.py "
             + (f"(first {args.lines} lines) " if args.lines else "")
             + f"({len(target.read_text().splitlines()):,} lines), Python "
             f"{'.'.join(map(str, sys.version_info[:3]))}, backend {args.backend}, "
             f"{args.rounds} rounds",
             "", "| contender | flags | wall (median) | / plain | CPU (median) | / plain "
             "| peak RSS | kept spans |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, samples in results.items():
        ratio = statistics.median(a[0] / b[0] for a, b in zip(samples, plain, strict=True))
        cpu = statistics.median(a[2] / b[2] for a, b in zip(samples, plain, strict=True))
        flags = contenders[name]
        shown = (f"python {shlex.join(PROFILERS[name])}" if name in PROFILERS else
                 "—" if flags is None else (shlex.join(flags) or "(all calls)"))
        spans = f"{kept[name]:,}" if name in kept else ""
        lines.append(f"| {name} | `{shown}` | {statistics.median(s[0] for s in samples):.2f} s "
                     f"| {ratio:.2f}x | {statistics.median(s[2] for s in samples):.2f} s "
                     f"| {cpu:.2f}x | {statistics.median(s[1] for s in samples):.0f} MB "
                     f"| {spans} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
