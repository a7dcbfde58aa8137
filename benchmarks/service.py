"""A real web service under a real server and real load, plain and traced (issue 24).

    pip install -e '.[test,bench]'          # gunicorn, Flask + its instrumentation, locust
    python benchmarks/service.py                        # 5 rounds x 2,000 requests
    python benchmarks/service.py --rounds 1 --requests 200 --only plain,instrumented,recipe

The app (written to a temporary folder) is modelled on Flask's tutorial, ``flaskr``: a
blog with an SQLite database, a blueprint, a ``before_app_request`` that loads the
user, a ``teardown_appcontext`` that closes the database, Jinja2 templates with a
base layout, and a JSON page. It runs under gunicorn (1 sync worker, 127.0.0.1,
a free port); spans go by OTLP/HTTP through a ``BatchSpanProcessor`` to a local
receiver (``Sink``: a Python HTTP server in its own process that decodes each request
with ``opentelemetry-proto`` and counts the spans). The load comes from locust
(headless, one user, no wait: a closed loop), over the app's pages in turn; a
locust event listener records every response time and end time, so p50/p99 are
exact, and throughput is requests per second over the measured window. Warm-up
requests (not measured) go first in every server.

Contenders (``--only`` picks some; ``plain`` always runs):

* ``plain``: gunicorn alone;
* ``instrumented``: OpenTelemetry's Flask instrumentation only (the ``autotrace``
  command with ``-p`` naming no module of the process, so it loads the
  instrumentations and exports exactly as the others);
* ``full``: + autotrace, the app fully traced (``-p svcapp``);
* ``min_duration``: + ``--min-duration 1ms``;
* ``require_parent``: + ``--require-parent``;
* ``recipe``: README's recipe, ``--backend auto --min-duration 1ms --require-parent``;
* ``everything``: ``-p svcapp,flask,werkzeug,jinja2 --min-duration 1ms``;
* ``no_export``: ``full`` with ``--exporter none`` (what exporting costs, by difference).

Rounds alternate the contenders (the order rotates each round) and every ratio is
taken against ``plain`` of the same round; the table gives the range over rounds
and the median. The machine's other load is not controlled: compare within a run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PATHS = ["/", "/post/1", "/post/2", "/api/posts", "/post/3", "/about"]
START_LIMIT = 90.0
PATTERNS = "svcapp"
NOTHING = "svcapp_not_imported"  # a pattern that matches nothing: the instrumentations only
CONTENDERS: dict[str, list[str] | None] = {
    "plain": None,
    "instrumented": ["-p", NOTHING],
    "full": ["-p", PATTERNS],
    "min_duration": ["-p", PATTERNS, "--min-duration", "1ms"],
    "require_parent": ["-p", PATTERNS, "--require-parent"],
    "recipe": ["-p", PATTERNS, "--backend", "auto", "--min-duration", "1ms",
               "--require-parent"],
    "everything": ["-p", f"{PATTERNS},flask,werkzeug,jinja2", "--backend", "auto",
                   "--min-duration", "1ms"],
    "no_export": ["-p", PATTERNS, "--exporter", "none"],
}

APP = {
    "svcapp/__init__.py": '''
        import os
        from flask import Flask

        def create_app():
            app = Flask(__name__)
            app.config["DATABASE"] = os.environ["SVC_DATABASE"]
            from . import db, blog
            db.init_app(app)
            app.register_blueprint(blog.bp)
            return app
    ''',
    "svcapp/db.py": '''
        import sqlite3
        from flask import current_app, g

        def get_db():
            if "db" not in g:
                g.db = sqlite3.connect(current_app.config["DATABASE"])
                g.db.row_factory = sqlite3.Row
            return g.db

        def close_db(e=None):
            db = g.pop("db", None)
            if db is not None:
                db.close()

        def init_db(path):
            db = sqlite3.connect(path)
            db.executescript("""
                DROP TABLE IF EXISTS user; DROP TABLE IF EXISTS post;
                CREATE TABLE user (id INTEGER PRIMARY KEY, username TEXT UNIQUE NOT NULL);
                CREATE TABLE post (id INTEGER PRIMARY KEY, author_id INTEGER NOT NULL,
                    created TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
                    title TEXT NOT NULL, body TEXT NOT NULL);
            """)
            db.execute("INSERT INTO user (username) VALUES ('test')")
            for i in range(1, 21):
                db.execute("INSERT INTO post (author_id, title, body) VALUES (1, ?, ?)",
                           (f"post {i}", "lorem ipsum dolor sit amet " * 20))
            db.commit()
            db.close()

        def init_app(app):
            app.teardown_appcontext(close_db)
    ''',
    "svcapp/blog.py": '''
        from flask import Blueprint, abort, g, jsonify, render_template_string
        from .db import get_db

        bp = Blueprint("blog", __name__)

        BASE = """<!doctype html><title>{% block title %}{% endblock %} - svc</title>
        <nav><h1>svc</h1><ul>{% if g.user %}<li>{{ g.user['username'] }}{% endif %}</ul></nav>
        <section class="content">{% block content %}{% endblock %}</section>"""
        INDEX = """{% extends base %}{% block title %}Posts{% endblock %}{% block content %}
        {% for post in posts %}<article class="post"><header><h1>{{ post['title'] }}</h1>
        <div class="about">by {{ post['username'] }} on {{ post['created'] }}</div></header>
        <p class="body">{{ post['body']|truncate(80) }}</p></article>
        {% if not loop.last %}<hr>{% endif %}{% endfor %}{% endblock %}"""
        POST = """{% extends base %}{% block title %}{{ post['title'] }}{% endblock %}
        {% block content %}<h1>{{ post['title'] }}</h1><p>{{ post['body'] }}</p>{% endblock %}"""

        def render(template, **context):
            from jinja2 import Template
            return render_template_string(template, base=Template(BASE), **context)

        @bp.before_app_request
        def load_logged_in_user():
            g.user = get_db().execute("SELECT * FROM user WHERE id = 1").fetchone()

        def get_posts():
            return get_db().execute(
                "SELECT p.id, title, body, created, author_id, username"
                " FROM post p JOIN user u ON p.author_id = u.id ORDER BY created DESC"
            ).fetchall()

        def get_post(id):
            post = get_db().execute(
                "SELECT p.id, title, body, created, author_id, username"
                " FROM post p JOIN user u ON p.author_id = u.id WHERE p.id = ?", (id,)
            ).fetchone()
            if post is None:
                abort(404)
            return post

        @bp.route("/")
        def index():
            return render(INDEX, posts=get_posts())

        @bp.route("/post/<int:id>")
        def show(id):
            return render(POST, post=get_post(id))

        @bp.route("/api/posts")
        def api_posts():
            return jsonify([dict(post) for post in get_posts()])

        @bp.route("/about")
        def about():
            return render("{% extends base %}{% block content %}about{% endblock %}")
    ''',
    "wsgi.py": '''
        from svcapp import create_app
        app = create_app()
    ''',
}

LOCUSTFILE = '''
import os, time
from locust import HttpUser, constant, events, task

N = int(os.environ["BENCH_REQUESTS"])
PATHS = os.environ["BENCH_PATHS"].split(",")
OUT = os.environ["BENCH_OUT"]
samples = []  # (response ms, end time)

@events.request.add_listener
def on_request(response_time, exception, **kwargs):
    if exception is not None:
        raise SystemExit(f"request failed: {exception}")
    samples.append((response_time, time.perf_counter()))

@events.quitting.add_listener
def on_quitting(environment, **kwargs):
    with open(OUT, "w") as out:
        out.writelines(f"{ms} {end}\\n" for ms, end in samples)

class Reader(HttpUser):
    wait_time = constant(0)

    @task
    def page(self):
        if len(samples) >= N:
            self.environment.runner.quit()
            return
        self.client.get(PATHS[len(samples) % len(PATHS)], name="page")
'''


class Sink:
    """An OTLP/HTTP receiver in a process of its own that counts the spans it decodes."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.count_file = workdir / "spans.count"
        script = workdir / "sink.py"
        script.write_text(SINK)
        self.process = subprocess.Popen([sys.executable, str(script), str(self.port),
                                         str(self.count_file)], stdin=subprocess.DEVNULL)
        wait_for_port(self.port, self.process)

    def spans(self) -> int:
        """Spans received so far (the sink writes its count after every request)."""
        try:
            return int(self.count_file.read_text() or 0)
        except (OSError, ValueError):
            return 0

    def settled(self, quiet: float = 0.5, limit: float = 30.0) -> int:
        """The count once it has not changed for ``quiet`` seconds."""
        deadline = time.monotonic() + limit
        count = self.spans()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.spans()
            if now == count:
                break
            count = now
        return count

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


SINK = '''
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

port, count_file = int(sys.argv[1]), sys.argv[2]
total = 0

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global total
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        total += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with open(count_file, "w") as out:
            out.write(str(total))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_LIMIT
    while True:
        if process.poll() is not None:
            raise SystemExit(f"exited with status {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listens on {port} after {START_LIMIT:g} s") from None
            time.sleep(0.1)


def write_app(root: Path) -> None:
    for relpath, source in APP.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    (root / "locustfile.py").write_text(LOCUSTFILE)
    sys.path.insert(0, str(root))
    from svcapp.db import init_db

    init_db(str(root / "svc.sqlite"))
    sys.path.remove(str(root))


def measure(name: str, flags: list[str] | None, root: Path, sink: Sink, requests: int,
            warmup: int) -> dict[str, float]:
    """One server of one contender: warm-up, then ``requests`` measured ones."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(SVC_DATABASE=str(root / "svc.sqlite"), PYTHONPATH=str(root),
               OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
               OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{sink.port}",
               OTEL_SERVICE_NAME="svc", PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    server = [str(bin_dir / "gunicorn"), "-w", "1", "-b", f"127.0.0.1:{port}", "--timeout", "300",
              "--access-logfile", "/dev/null", "--error-logfile", "/dev/null", "wsgi:app"]
    command = server if flags is None else [str(bin_dir / "autotrace"), *flags, *server]
    with open(root / f"server-{name}.log", "w") as log:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=log,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    before = sink.spans()
    try:
        wait_for_port(port, process)
        run_locust(root, port, warmup)
        samples = run_locust(root, port, requests)
    finally:
        process.send_signal(signal.SIGTERM)  # the worker flushes its spans as it stops
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    spans = sink.settled() - before
    times = sorted(ms for ms, _ in samples)
    window = samples[-1][1] - samples[0][1]
    return {"p50": quantile(times, 0.50), "p99": quantile(times, 0.99),
            "throughput": (len(samples) - 1) / window if window > 0 else 0.0,
            "spans": spans / (warmup + requests)}


def run_locust(root: Path, port: int, count: int) -> list[tuple[float, float]]:
    out = root / "locust.samples"
    env = {**os.environ, "BENCH_REQUESTS": str(count), "BENCH_PATHS": ",".join(PATHS),
           "BENCH_OUT": str(out)}
    locust = Path(sys.executable).parent / "locust"
    subprocess.run([str(locust), "-f", str(root / "locustfile.py"), "--headless", "-u", "1",
                    "-r", "1", "--run-time", "600s", "--host", f"http://127.0.0.1:{port}",
                    "--only-summary", "--loglevel", "WARNING", "--skip-log-setup"],
                   cwd=root, env=env, check=True, timeout=900, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    samples = []
    for line in out.read_text().splitlines():
        ms, end = line.split()
        samples.append((float(ms), float(end)))
    if len(samples) < count:
        raise SystemExit(f"locust made {len(samples)} of {count} requests")
    return samples[:count]


def quantile(values: list[float], q: float) -> float:
    index = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--only", help="comma-separated contenders (plain always runs)")
    parser.add_argument("--output", help="a Markdown report (default: print only)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (the app, each server's log)")
    args = parser.parse_args()
    names = list(CONTENDERS)
    if args.only:
        names = ["plain", *[n for n in args.only.split(",") if n != "plain"]]
        unknown = set(names) - set(CONTENDERS)
        if unknown:
            parser.error(f"unknown contenders {sorted(unknown)}; use {', '.join(CONTENDERS)}")
    root = Path(tempfile.mkdtemp(prefix="autotrace-service-"))
    write_app(root)
    sink = Sink(root)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    try:
        for round_index in range(args.rounds):
            order = names[round_index % len(names):] + names[:round_index % len(names)]
            for name in order:
                result = measure(name, CONTENDERS[name], root, sink, args.requests,
                                 args.warmup)
                results[name].append(result)
                print(f"round {round_index + 1} {name:<15} p50 {result['p50']:7.2f} ms  "
                      f"p99 {result['p99']:7.2f} ms  {result['throughput']:7.1f} req/s  "
                      f"{result['spans']:6.1f} spans/req", flush=True)
    finally:
        sink.stop()
        if args.keep:
            print(f"work folder: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    report = table(results, args)
    print(report)
    if args.output:
        Path(args.output).write_text(report)


def table(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> str:
    plain = results["plain"]
    lines = [f"{args.rounds} rounds x {args.requests:,} requests (after {args.warmup} warm-up),"
             f" Python {sys.version.split()[0]}, gunicorn 1 sync worker, locust 1 user; "
             "ratios to plain in the same round: median (min-max)", "",
             "| contender | p50 | p99 | throughput | spans per request | plain p50 / p99 / req/s |",
             "| --- | --- | --- | --- | ---: | --- |"]

    def cell(values: list[float]) -> str:
        return (f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
                if len(values) > 1 else f"{values[0]:.2f}")

    for name, rounds in results.items():
        ratios = {key: [r[key] / p[key] for r, p in zip(rounds, plain, strict=True)]
                  for key in ("p50", "p99", "throughput")}
        absolute = (f"{statistics.median(r['p50'] for r in plain):.2f} ms / "
                    f"{statistics.median(r['p99'] for r in plain):.2f} ms / "
                    f"{statistics.median(r['throughput'] for r in plain):.0f}"
                    if name == "plain" else "")
        lines.append(f"| {name} | {cell(ratios['p50'])} | {cell(ratios['p99'])} | "
                     f"{cell(ratios['throughput'])} | "
                     f"{statistics.median(r['spans'] for r in rounds):.1f} | {absolute} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
