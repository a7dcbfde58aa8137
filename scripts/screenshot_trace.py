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
import base64
import json
import os
import select
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


class DevTools:
    """Chromium's DevTools protocol over ``--remote-debugging-pipe`` (fds 3 and 4)."""

    def __init__(self, command: list[str]) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def plumb() -> None:
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.process = subprocess.Popen(command, preexec_fn=plumb, close_fds=False,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next = 0

    def call(self, method: str, session: str | None = None, limit: float = 30,
             **params: object) -> dict[str, object]:
        self._next += 1
        message: dict[str, object] = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return dict(reply.get("result", {}))
            ready, _, _ = select.select([self._from_chrome], [], [], 0.5)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buffer += chunk
        raise TimeoutError(f"{method}: no answer within {limit:g} s")

    def close(self) -> None:
        try:
            self.call("Browser.close", limit=5)
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        os.close(self._to_chrome)
        os.close(self._from_chrome)


#: True once Perfetto has loaded the trace and listed the traced process's track group.
LOADED = "document.body.innerText.includes('timeline_example.py (pid')"
def screenshot(chromium: str, url: str, profile: Path, size: str, wait: float) -> bytes:
    width, height = (int(part) for part in size.split(","))
    tools = DevTools([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                      f"--window-size={width},{height}", "--remote-debugging-pipe",
                      "about:blank"])
    try:
        target = tools.call("Target.createTarget", url=url)["targetId"]
        session = str(tools.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"])
        tools.call("Emulation.setDeviceMetricsOverride", session, width=width,
                   height=height, deviceScaleFactor=1, mobile=False)
        deadline = time.monotonic() + wait
        loaded = False
        while time.monotonic() < deadline and not loaded:
            time.sleep(0.5)
            result = tools.call("Runtime.evaluate", session, expression=LOADED,
                                returnByValue=True)
            loaded = bool(dict(result.get("result", {})).get("value"))  # type: ignore[call-overload]
        if not loaded:
            sys.stderr.write(f"screenshot_trace: the UI did not finish loading within "
                             f"{wait:g} s; taking the screenshot anyway\n")
        # Perfetto redraws its canvas on input; a headless page gets none, so move the
        # mouse over the timeline a few times before taking the picture.
        for x in (width // 2, width // 2 + 40, width // 2):
            tools.call("Input.dispatchMouseEvent", session, type="mouseMoved", x=x,
                       y=height // 2)
            time.sleep(0.5)
        time.sleep(3)  # let it draw the tracks
        data = tools.call("Page.captureScreenshot", session, format="png",
                          fromSurface=True)["data"]
        return base64.b64decode(str(data))
    finally:
        tools.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "trace-view.png"))
    parser.add_argument("--chromium")
    parser.add_argument("--size", default="1600,900", help="window size (default 1600,900)")
    parser.add_argument("--wait", type=float, default=60.0,
                        help="longest wait for the UI to load the trace (default 60 s)")
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
            started = time.monotonic()
            png = screenshot(chromium, url, Path(tmp) / "profile", args.size, args.wait)
            out.write_bytes(png)
            print(f"screenshot_trace: {out} ({len(png):,} bytes, "
                  f"{time.monotonic() - started:.1f} s)")
        finally:
            server.terminate()
            server.wait(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
