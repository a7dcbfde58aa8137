"""Start-up cost of the ``autotrace`` command per Python process (issue 13.15).

``python benchmarks/startup.py [--runs N] [--before SRC]`` times ``python -c pass``
plain and with the environment the command gives every process it starts (the
bootstrap first on ``PYTHONPATH``, patterns that match nothing here), and the whole
command ``python -m autotrace -p myapp python -c pass`` (its own start plus the
program's). ``--before SRC`` (a ``src`` directory of another autotrace checkout, e.g.
``git archive``d from an older commit) adds its bootstrap to the same runs. The
variants alternate within each round, so load from other processes cancels out;
figures are medians. Target: <= 150 ms added per process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def command_env(src: Path) -> dict[str, str]:
    """The environment ``autotrace -p myapp`` gives its program, for the tree ``src``."""
    code = ("import os, sys; from autotrace.zerocode.cli import prepare; "
            "_, env = prepare(['-p', 'myapp', 'python'], os.environ); "
            "sys.stdout.write(repr(env))")
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    prepared: dict[str, str] = eval(out)  # a dict literal we printed ourselves
    prepared["PYTHONPATH"] += os.pathsep + str(src)
    return prepared


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--before", type=Path, help="src directory of the version to compare")
    args = parser.parse_args()
    plain_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    variants: dict[str, tuple[list[str], dict[str, str]]] = {
        "plain python -c pass": ([sys.executable, "-c", "pass"], plain_env),
        "under the command (this tree)": ([sys.executable, "-c", "pass"], command_env(SRC)),
        "whole command (this tree)": ([sys.executable, "-m", "autotrace", "-p", "myapp",
                                       sys.executable, "-c", "pass"],
                                      dict(plain_env, PYTHONPATH=str(SRC))),
    }
    if args.before:
        variants["under the command (before)"] = ([sys.executable, "-c", "pass"],
                                                  command_env(args.before))
        variants["whole command (before)"] = ([sys.executable, "-m", "autotrace", "-p", "myapp",
                                               sys.executable, "-c", "pass"],
                                              dict(plain_env, PYTHONPATH=str(args.before)))
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.runs):
        for name, (argv, env) in variants.items():
            times[name].append(timed(argv, env))
    plain = statistics.median(times["plain python -c pass"])
    print(f"medians of {args.runs} alternating runs (Python {sys.version.split()[0]}):")
    for name, samples in times.items():
        median = statistics.median(samples)
        added = "" if name.startswith("plain") else f"  (+{(median - plain) * 1e3:.0f} ms)"
        print(f"  {name:<32} {median * 1e3:7.0f} ms{added}")


if __name__ == "__main__":
    main()
