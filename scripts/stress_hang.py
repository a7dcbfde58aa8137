#!/usr/bin/env python3
"""Real programs under ``--min-duration 1ms``, watched for hangs (issue 18).

A tracer that deadlocks does so only in real programs and only sometimes (the
garbage collector has to finalise a traced generator at the wrong moment), so
this runs real programs nobody here wrote, several rounds per backend, under
the ``autotrace`` command:

* ``black``: the pure-Python build of black (``benchmarks/real_program.py``'s venv)
  reformats the standard library's ``typing.py`` re-indented to two spaces, the
  input of the original report;
* ``toolz``: toolz's own test suite (its sdist, with pytest).

A watchdog reads each run's CPU time from ``/proc``; a deadlocked process sits at
none. When a run makes no progress for ``--stall`` seconds (or exceeds
``--timeout``), the watchdog sends SIGQUIT, on which the command prints every
thread's stack to stderr (``faulthandler``), shows that stack and fails.

    python scripts/stress_hang.py                        # both programs, every backend, 3 rounds
    python scripts/stress_hang.py --program black --rounds 10 --backend wrapt
    python scripts/stress_hang.py --lines 1500           # a shorter input (CI)

Exit status 0 when every run finished with the program's own status.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from real_program import PATTERNS, ensure_venv, first_lines  # noqa: E402  (shared)

TOOLZ = "toolz==1.2.0"
BACKENDS = ["wrapt"] + (["monitoring"] if sys.version_info >= (3, 12) else [])


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` (Linux ``/proc``), or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def watch(command: list[str], cwd: Path, env: dict[str, str], stall: float,
          timeout: float, ok: tuple[int, ...]) -> tuple[bool, str]:
    """Run ``command``; on no CPU progress for ``stall`` seconds, dump its stacks and fail."""
    with tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                   stderr=err, text=True)
        started = last_change = time.monotonic()
        last_cpu = 0.0
        verdict = ""
        while process.poll() is None:
            time.sleep(0.5)
            now = time.monotonic()
            cpu = cpu_seconds(process.pid)
            if cpu is not None and cpu > last_cpu + 0.01:
                last_cpu, last_change = cpu, now
            if now - last_change > stall:
                verdict = f"no progress for {stall:.0f} s (CPU {last_cpu:.1f} s): hung"
            elif now - started > timeout:
                verdict = f"still running after {timeout:.0f} s"
            if verdict:
                process.send_signal(signal.SIGQUIT)  # the command prints every stack
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                break
        err.seek(0)
        stderr = err.read()
    seconds = time.monotonic() - started
    if verdict:
        return False, f"{verdict}\n{_stacks(stderr)}"
    if process.returncode not in ok:
        return False, f"exit status {process.returncode}\n{stderr[-3000:]}"
    faults = [line for line in stderr.splitlines() if line.startswith("autotrace: could")]
    if faults:
        return False, "autotrace logged a fault:\n" + "\n".join(faults[:5])
    return True, f"{seconds:.1f} s, CPU {last_cpu:.1f} s"


def _stacks(stderr: str) -> str:
    at = stderr.find("Thread 0x")
    if at < 0:
        at = stderr.find("Current thread 0x")
    return stderr[at:] if at >= 0 else stderr[-3000:]


def reindented_typing(lines: int | None) -> Path:
    """The standard library's ``typing.py`` with two-space indentation (valid Python)."""
    import typing

    source = Path(typing.__file__).read_text().splitlines()
    out = []
    for line in source:
        stripped = line.lstrip(" ")
        depth = len(line) - len(stripped)
        # four-space levels become two; other indentation (continuations) stays
        out.append(" " * (depth // 2) + stripped if depth % 4 == 0 else line)
    path = Path(tempfile.mkdtemp()) / "big.py"
    path.write_text("\n".join(out) + "\n")
    return first_lines(path, lines) if lines else path


def toolz_tree(python: Path) -> Path:
    """toolz's sdist, unpacked (its tests run against its own source)."""
    where = REPO / "benchmarks" / ".work" / "toolz"
    if not (where / "ready").exists():
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(python), "-m", "pip", "download", "-q", "--no-deps",
                        "--no-binary", ":all:", TOOLZ, "-d", str(where)], check=True)
        archive = next(where.glob("toolz-*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(where, filter="data") if sys.version_info >= (3, 12) else \
                tar.extractall(where)
        (where / "ready").write_text("")
    return next(p for p in where.glob("toolz-*") if p.is_dir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--program", action="append", choices=["black", "toolz"])
    parser.add_argument("--backend", action="append", choices=BACKENDS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lines", type=int, default=0,
                        help="black: only the first LINES lines of the input")
    parser.add_argument("--stall", type=float, default=30.0,
                        help="seconds without CPU progress that count as a hang")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    args = parser.parse_args()
    programs = args.program or ["black", "toolz"]
    backends = args.backend or BACKENDS

    python = ensure_venv()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.pop("PYTHONPATH", None)
    runs: list[tuple[str, list[str], Path, dict[str, str], tuple[int, ...]]] = []
    if "black" in programs:
        big = reindented_typing(args.lines or None)
        command = [str(python), "-m", "black", "--diff", "-q", str(big)]
        runs.append(("black", command, big.parent, env, (0, 1)))  # 1: black would change it
    if "toolz" in programs:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "pytest"], check=True)
        tree = toolz_tree(python)
        command = [str(python), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                   "toolz/tests"]
        runs.append(("toolz", command, tree, {**env, "PYTHONPATH": str(tree)}, (0,)))

    failures = 0
    for round_ in range(1, args.rounds + 1):
        for name, command, cwd, run_env, ok in runs:
            for backend in backends:
                patterns = PATTERNS if name == "black" else "toolz"
                traced = [str(python), "-m", "autotrace", "-p", patterns, "--backend", backend,
                          "--min-duration", "1ms", *command]
                passed, detail = watch(traced, cwd, run_env, args.stall, args.timeout, ok)
                print(f"round {round_} {name} [{backend}]: {'ok' if passed else 'FAILED'}: "
                      f"{detail}", flush=True)
                if not passed:
                    failures += 1
                    print(f"    command: {shlex.join(traced)}", flush=True)
    print(f"{failures} failed" if failures else "no hang", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
