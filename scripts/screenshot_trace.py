"""Remake the README's screenshot: a real trace of ``examples/`` in ``autotrace view``.

    python scripts/screenshot_trace.py [--out docs/trace-view.png] [--chromium PATH]

It traces ``examples/timeline_example.py`` with ``--exporter trace-file``, serves
the file with ``autotrace view`` (needs ``otel-autotrace[viewer]``) on a free
127.0.0.1 port and takes the screenshot with headless Chromium (Debian:
``apt-get install chromium``), in a fresh profile, with its background network
features off. Everything runs locally; each wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
AUTOTRACE = [sys.executable, "-m", "autotrace"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def find_chromium(given: str | None) -> str:
    for candidate in ([given] if given else ["chromium", "chromium-browser", "google-chrome"]):
        path = shutil.which(candidate) if candidate else None
        if path:
            return path
    sys.exit("screenshot_trace: no Chromium found; apt-get install chromium "
             "(or pass --chromium PATH)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "trace-view.png"))
    parser.add_argument("--chromium")
    parser.add_argument("--size", default="1600,900", help="window size (default 1600,900)")
    parser.add_argument("--wait", type=float, default=20.0,
                        help="seconds Chromium gives the UI to load the trace (default 20)")
    args = parser.parse_args()
    chromium = find_chromium(args.chromium)
    with tempfile.TemporaryDirectory(prefix="autotrace-shot-") as tmp:
        trace = Path(tmp) / "trace.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        subprocess.run([*AUTOTRACE, "-p", "shop,timeline_example", "--exporter", "trace-file",
                        "--trace-file", str(trace), sys.executable, "timeline_example.py"],
                       cwd=EXAMPLES, env=env, check=True, timeout=120)
        server = subprocess.Popen([*AUTOTRACE, "view", str(trace), "--port", "0"],
                                  stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            if " at http://127.0.0.1:" not in line:
                sys.exit(f"screenshot_trace: autotrace view did not start: {line!r}")
            url = line.split(" at ", 1)[1].split()[0]
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            profile = Path(tmp) / "profile"
            started = time.monotonic()
            subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                            f"--window-size={args.size}",
                            f"--virtual-time-budget={int(args.wait * 1000)}",
                            f"--screenshot={out}", url],
                           check=True, timeout=args.wait + 120,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(f"screenshot_trace: {out} ({out.stat().st_size:,} bytes, "
                  f"{time.monotonic() - started:.1f} s)")
        finally:
            server.terminate()
            server.wait(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
