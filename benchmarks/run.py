"""Run the strategy comparison on every Python 3.10-3.13 present; one results file each.

Interpreters are looked up under ``$(pyenv root)/versions/`` (or given with
``--python``). Each gets a venv in ``benchmarks/.work/venv-X.Y`` with
``pip install -e '.[bench]'``, made once and refreshed when pyproject.toml
changes; then ``bench.py`` runs in it and writes ``benchmarks/results/X.Y.md``.
Needs only the standard library, so any Python 3 can start it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work"
MINORS = ("3.10", "3.11", "3.12", "3.13")


def pyenv_root() -> Path:
    try:
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True)
        return Path(out.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))


def find_interpreters() -> dict[str, Path]:
    """The newest patch release of each supported minor version under pyenv."""
    found: dict[str, tuple[tuple[int, ...], Path]] = {}
    versions = pyenv_root() / "versions"
    for entry in versions.iterdir() if versions.is_dir() else []:
        match = re.fullmatch(r"(3\.\d+)\.(\d+)", entry.name)
        python = entry / "bin" / "python3"
        if not match or match.group(1) not in MINORS or not python.exists():
            continue
        key = (int(match.group(2)),)
        if match.group(1) not in found or key > found[match.group(1)][0]:
            found[match.group(1)] = (key, python)
    return {minor: found[minor][1] for minor in MINORS if minor in found}


def ensure_venv(minor: str, python: Path) -> Path:
    """A venv with the bench extra, rebuilt when pyproject.toml has changed since."""
    venv = WORK / f"venv-{minor}"
    stamp = venv / "autotrace-bench.stamp"
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return venv / "bin" / "python"
    print(f"::: Python {minor}: preparing {venv}", flush=True)
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    try:
        subprocess.run([*pip, "-e", f"{REPO}[bench]"], check=True)
    except subprocess.CalledProcessError:
        # Logfire may not install on some interpreter; bench.py then skips it with a note.
        print(f"::: Python {minor}: the bench extra did not install; without it", flush=True)
        subprocess.run([*pip, "-e", str(REPO)], check=True)
    stamp.write_text(digest)
    return venv / "bin" / "python"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", action="append", default=[], metavar="X.Y",
                        help="only these minor versions (repeatable)")
    parser.add_argument("--quick", action="store_true", help="few samples: a smoke test")
    args = parser.parse_args()
    interpreters = find_interpreters()
    if args.python:
        interpreters = {k: v for k, v in interpreters.items() if k in args.python}
    if not interpreters:
        sys.exit("no Python 3.10-3.13 found under $(pyenv root)/versions")
    WORK.mkdir(exist_ok=True)
    start = time.monotonic()
    for minor, python in interpreters.items():
        venv_python = ensure_venv(minor, python)
        print(f"::: Python {minor}: measuring", flush=True)
        command = [str(venv_python), str(HERE / "bench.py")]
        subprocess.run(command + (["--quick"] if args.quick else []), check=True, cwd=REPO)
    print(f"::: done in {time.monotonic() - start:.0f} s: {', '.join(interpreters)}")
    subprocess.run([str(venv_python), str(HERE / "bench.py"), "--summary"], check=True)


if __name__ == "__main__":
    main()
