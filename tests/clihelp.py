"""Running the real ``autotrace`` command in a subprocess, as a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

AUTOTRACE = [sys.executable, "-m", "autotrace"]


def ctrl_c_works() -> None:
    """``preexec_fn`` for a child the test stops with SIGINT: a shell that starts jobs in
    the background without job control (``(cmd &)``, some CI runners) makes them ignore
    SIGINT, and Python keeps an ignored SIGINT ignored, so Ctrl+C would never arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without OpenTelemetry/autotrace settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OTEL_") and k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def write(root: Path, relpath: str, source: str) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
        **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", 120)
    return subprocess.run(args, cwd=cwd, env=clean_env() if env is None else env, text=True,
                          capture_output=True, **kwargs)


def tree_lines(stderr: str) -> list[str]:
    """The call-tree lines (indented) of the command's default output."""
    return [line for line in stderr.splitlines() if line.startswith("  ")]
