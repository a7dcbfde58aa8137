#!/usr/bin/env python3
"""Run third-party libraries' own test suites plain and under autotrace; compare.

For each suite (toolz, more-itertools, pyparsing, jinja2, boltons): download the
sdist from the package index (``pip download --no-binary :all:``), unpack it, install the test
dependencies it needs, then run its test suite once plain and once per backend
with autotrace tracing the library's own modules (pattern = its top-level
package). The library is imported from the unpacked sdist (checked: every
module of the package must come from there), and autotrace is installed before
the library is first imported (``autotrace_suite_harness``).

Per run it reports tests passed/failed/errored/skipped, spans produced and wall
time. It exits non-zero unless, for every traced run: every test that passed
plain also passed traced, spans > 0, the library came from the sdist, and
autotrace logged no internal fault.

    python scripts/third_party_suites.py                      # every backend available
    python scripts/third_party_suites.py --backend monitoring --suite toolz
    python scripts/third_party_suites.py --json results.json --keep

Needs network access to the package index; runs in the current interpreter,
which must have autotrace installed (``pip install -e .``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RUN_TIMEOUT = 3600  # seconds per run; generous: CI machines are shared and noisy


@dataclass(frozen=True)
class Suite:
    name: str
    requirement: str  # what ``pip download`` fetches
    patterns: tuple[str, ...]  # what autotrace traces: the library's top package
    runner: str  # "pytest" or "unittest": the runner the project itself uses
    args: tuple[str, ...] = ()
    test_deps: tuple[str, ...] = ()  # importable names; installed with pip when missing
    source_dir: str = ""  # where the package lives inside the sdist ("src" layouts)


SUITES = {
    # toolz runs its tests with pytest (config in its pyproject: warnings are errors).
    "toolz": Suite("toolz", "toolz==1.2.0", ("toolz",), "pytest", test_deps=("pytest",)),
    # more-itertools runs ``python -m unittest`` (its Makefile), doctests included.
    "more-itertools": Suite("more-itertools", "more-itertools==11.2.1", ("more_itertools",),
                            "unittest"),
    # The suites below stress what a Python-level wrapper can change (issue 13).
    # pyparsing: parse actions called with fewer arguments when the TypeError comes
    # from the call itself (arity probing by traceback), deep recursive descent,
    # stack introspection (its tests run with `pytest tests`, per its tox.ini).
    # Its unit tests of the parser (tests/test_unit.py, ~2,000 tests, 5 min plain on a
    # loaded CI machine) take far longer traced: the three smaller files keep CI short.
    "pyparsing": Suite("pyparsing", "pyparsing==3.3.3", ("pyparsing",), "pytest",
                       args=("tests/test_simple_unit.py", "tests/test_util.py",
                             "tests/test_testing.py"), test_deps=("pytest",)),
    # jinja2: rewrites tracebacks dropping internal frames by code object, pickles
    # module-level registries, inspects the stack for template debugging.
    # (the two async test modules need trio: left out)
    "jinja2": Suite("jinja2", "jinja2==3.1.6", ("jinja2",), "pytest",
                    args=("tests", "--ignore=tests/test_async.py",
                          "--ignore=tests/test_async_filters.py"),
                    test_deps=("pytest", "markupsafe"), source_dir="src"),
    # boltons: class factories, sentinels naming their caller's module, frozen
    # types, tracebacks utilities, caches, deep recursion helpers.
    "boltons": Suite("boltons", "boltons==26.2.0", ("boltons",), "pytest", args=("tests",),
                     test_deps=("pytest",)),
}


@dataclass
class Run:
    suite: str
    mode: str  # "plain" or a backend
    wall: float
    returncode: int
    report: dict[str, Any] | None
    log: Path
    problems: list[str] = field(default_factory=list)

    def counts(self) -> Counter[str]:
        if self.report is None:
            return Counter()
        return Counter(o for outs in self.report["outcomes"].values() for o in outs)


def available_backends() -> list[str]:
    return ["wrapt"] + (["monitoring"] if sys.version_info >= (3, 12) else [])


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def fetch(suite: Suite, work: Path, latest: bool) -> Path:
    """Download and unpack the sdist; the unpacked project root."""
    download = work / "download" / suite.name
    download.mkdir(parents=True, exist_ok=True)
    requirement = suite.requirement.split("==")[0] if latest else suite.requirement
    pip("download", "-q", "--no-binary", ":all:", "--no-deps",
        "-d", str(download), requirement)
    archives = sorted(p for p in download.iterdir()
                      if p.name.endswith((".tar.gz", ".zip", ".tar.bz2")))
    if len(archives) != 1:
        raise SystemExit(f"expected one sdist for {requirement}, got {archives}")
    target = work / "src" / suite.name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    archive = archives[0]
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(target)
    else:
        with tarfile.open(archive) as tf:
            if hasattr(tarfile, "data_filter"):
                tf.extractall(target, filter="data")
            else:  # pragma: no cover - very old patch releases
                tf.extractall(target)
    roots = [p for p in target.iterdir() if p.is_dir()]
    if len(roots) != 1:
        raise SystemExit(f"unexpected layout in {archive.name}: {roots}")
    print(f"::: {suite.name}: {archive.name} unpacked to {roots[0]}", flush=True)
    return roots[0]


def install_test_deps(suite: Suite) -> None:
    missing = [dep for dep in suite.test_deps if importlib.util.find_spec(dep) is None]
    if missing:
        pip("install", "-q", *missing)


def run_suite(suite: Suite, root: Path, mode: str, work: Path) -> Run:
    report = work / "reports" / f"{suite.name}-{mode}.json"
    log = work / "logs" / f"{suite.name}-{mode}.log"
    report.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    env = dict(os.environ)
    env.update({
        "AUTOTRACE_SUITE_BACKEND": "" if mode == "plain" else mode,
        "AUTOTRACE_SUITE_PATTERNS": ",".join(suite.patterns),
        "AUTOTRACE_SUITE_ROOT": str(root),
        "AUTOTRACE_SUITE_REPORT": str(report),
        "PYTHONPATH": os.pathsep.join(filter(None, [
            str(HERE), str(root / suite.source_dir) if suite.source_dir else "", str(root),
            env.get("PYTHONPATH", "")])),
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    for var in [v for v in env if v.startswith("OTEL_PYTHON_AUTOTRACE_")]:
        del env[var]
    if suite.runner == "pytest":
        command = [sys.executable, "-m", "pytest", "-p", "autotrace_suite_harness",
                   "-p", "no:cacheprovider", "-q", *suite.args]
    else:
        command = [sys.executable, "-m", "autotrace_suite_harness", *suite.args]
    print(f"::: {suite.name} [{mode}]: {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    with open(log, "wb") as out:
        try:
            proc = subprocess.run(command, cwd=root, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT)
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            returncode = -1
    wall = time.monotonic() - started
    data = json.loads(report.read_text()) if report.exists() else None
    run = Run(suite.name, mode, wall, returncode, data, log)
    if data is None:
        run.problems.append(f"no report (exit {returncode}; timed out: {returncode == -1})")
    return run


def judge(plain: Run, traced: Run) -> None:
    """Add to ``traced.problems`` every way it falls short of the plain run."""
    report = traced.report
    if report is None or plain.report is None:
        if plain.report is None:
            traced.problems.append("the plain run produced no report to compare with")
        return
    if not report["installed"]:
        traced.problems.append("autotrace was not installed")
    if report["spans"] <= 0:
        traced.problems.append("no spans")
    if report["library_modules"] == 0:
        traced.problems.append("the library was never imported")
    if report["modules_outside_root"]:
        traced.problems.append(f"library modules from outside the sdist: "
                               f"{report['modules_outside_root'][:5]}")
    if report["preimported"]:
        traced.problems.append(f"imported before autotrace: {report['preimported'][:5]}")
    if report["autotrace_warnings"]:
        traced.problems.append(f"autotrace logged faults: {report['autotrace_warnings'][:5]}")
    traced_outcomes: dict[str, list[str]] = report["outcomes"]
    lost = []
    for key, outcomes in plain.report["outcomes"].items():
        wanted = outcomes.count("passed")
        if wanted and traced_outcomes.get(key, []).count("passed") < wanted:
            lost.append(f"{key}: plain {outcomes}, traced {traced_outcomes.get(key, [])}")
    if lost:
        traced.problems.append(f"{len(lost)} tests passed plain but not traced:\n    "
                               + "\n    ".join(lost[:30]))


def print_table(runs: list[Run]) -> None:
    header = (f"{'suite':<16}{'run':<12}{'python':<9}{'passed':>8}{'failed':>8}{'errors':>8}"
              f"{'skipped':>9}{'spans':>10}{'wall s':>9}  verdict")
    print("\n" + header + "\n" + "-" * len(header))
    for run in runs:
        c = run.counts()
        spans = run.report["spans"] if run.report and run.mode != "plain" else "-"
        python = run.report["python"] if run.report else "?"
        verdict = "ok" if not run.problems else "FAIL"
        if run.mode == "plain":
            verdict = "baseline" if run.report else "FAIL"
        print(f"{run.suite:<16}{run.mode:<12}{python:<9}{c['passed']:>8}{c['failed']:>8}"
              f"{c['error']:>8}{c['skipped'] + c['xfailed']:>9}{spans!s:>10}"
              f"{run.wall:>9.1f}  {verdict}")
    print("(counts are test outcomes, subtests included)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--suite", action="append", choices=sorted(SUITES),
                        help="suite to run (repeatable; default: all)")
    parser.add_argument("--backend", action="append", choices=["wrapt", "monitoring"],
                        help="backend to trace with (repeatable; default: all available)")
    parser.add_argument("--work", type=Path, help="work directory (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--latest", action="store_true",
                        help="test the latest release instead of the pinned one")
    parser.add_argument("--json", type=Path, help="write a summary of every run here")
    options = parser.parse_args(argv)

    backends = options.backend or available_backends()
    unavailable = [b for b in backends if b not in available_backends()]
    if unavailable:
        parser.error(f"backend {unavailable} needs Python 3.12+; this is "
                     f"{sys.version.split()[0]}")
    import autotrace  # noqa: F401  (fail early if it is not installed)

    work = options.work or Path(tempfile.mkdtemp(prefix="autotrace-suites-"))
    work.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    try:
        for name in options.suite or list(SUITES):
            suite = SUITES[name]
            root = fetch(suite, work, options.latest)
            install_test_deps(suite)
            plain = run_suite(suite, root, "plain", work)
            runs.append(plain)
            for backend in backends:
                traced = run_suite(suite, root, backend, work)
                judge(plain, traced)
                runs.append(traced)
        print_table(runs)
        failed = [r for r in runs if r.problems]
        for run in failed:
            print(f"\n::: {run.suite} [{run.mode}] FAILED (log: {run.log}):")
            for problem in run.problems:
                print(f"  - {problem}")
            tail = run.log.read_text(errors="replace").splitlines()[-40:]
            print("  last lines of the log:\n    " + "\n    ".join(tail))
        if options.json:
            options.json.write_text(json.dumps([{
                "suite": r.suite, "mode": r.mode, "wall_s": round(r.wall, 1),
                "python": r.report["python"] if r.report else None,
                "counts": dict(r.counts()),
                "spans": r.report["spans"] if r.report else None,
                "problems": r.problems,
            } for r in runs], indent=2))
        print("\n::: third-party suites: " + ("FAILED" if failed else "all passed"))
        return 1 if failed else 0
    finally:
        if options.work is None and not options.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif runs:
            print(f"::: work directory kept: {work}")


if __name__ == "__main__":
    sys.exit(main())
