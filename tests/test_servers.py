"""Real servers under the ``autotrace`` command (issue 24): gunicorn, uvicorn, a real collector.

Each test starts a real pre-fork server on 127.0.0.1 under the command, with the
installed OpenTelemetry instrumentations loaded by it, makes a few requests
(each with a timeout), stops the server with SIGTERM and reads the spans a real
collector (rotel) received. ``OTEL_BSP_SCHEDULE_DELAY`` is a minute, so spans
arrive only if the workers flush them on a graceful shutdown. Every wait is
bounded; a server that does not stop is killed with its process group.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .clihelp import AUTOTRACE, clean_env, write
from .collector import CollectedSpan, Collector, collector, free_port

__all__ = ["collector"]  # the fixture

pytest.importorskip("opentelemetry.instrumentation.auto_instrumentation")

START_LIMIT = 60.0  # seconds for a server to accept connections (a loaded 2-core machine)
STOP_LIMIT = 30.0

FLASK_APP = '''
import time
from flask import Flask, g

app = Flask(__name__)

def helper(x):
    return x * 2

@app.teardown_appcontext
def close_db(exc):
    g.pop("db", None)

@app.route("/item/<int:n>")
def item(n):
    g.db = object()
    time.sleep(0.003)  # slower than --min-duration 1ms
    return str(helper(n))
'''

STARLETTE_APP = '''
import asyncio
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

async def compute(n):
    await asyncio.sleep(0.002)
    return n * 2

async def both(n):
    first, second = await asyncio.gather(compute(n), compute(n + 1))
    return first + second

async def item(request):
    n = int(request.path_params["n"])
    return PlainTextResponse(str(await both(n)))

app = Starlette(routes=[Route("/item/{n:int}", item)])
'''


def _server_env(collector: Collector, **extra: str) -> dict[str, str]:
    return clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_endpoint,
                     OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", OTEL_BSP_SCHEDULE_DELAY="60000",
                     OTEL_SERVICE_NAME="svc", **extra)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=20) as response:
        return str(response.read().decode())


@contextmanager
def serving(command: list[str], cwd: Path, env: dict[str, str], port: int
            ) -> Iterator[subprocess.Popen[str]]:
    """The server started, accepting on ``port``; stopped with SIGTERM on leaving (the
    output is then in ``process.output``), killed with its group if it does not stop."""
    log = cwd / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + START_LIMIT
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited ({process.returncode}):\n{log.read_text()}")
            try:
                _get(f"http://127.0.0.1:{port}/item/0")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the server did not start:\n{log.read_text()}")
                time.sleep(0.1)
        yield process
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=STOP_LIMIT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        process.output = log.read_text()  # type: ignore[attr-defined]


def _requests(port: int, values: range) -> None:
    for n in values:
        assert _get(f"http://127.0.0.1:{port}/item/{n}") in (str(2 * n), str(4 * n + 2))


def _by_request(spans: list[CollectedSpan], server_name: str
                ) -> dict[str, tuple[CollectedSpan, list[CollectedSpan]]]:
    """Each SERVER span of a request with ``/item/N`` (N > 0) by N, with its trace's
    other spans."""
    out = {}
    for server in spans:
        if server.name == server_name and "SERVER" in server.kind.upper():
            target = str(server.attributes.get("url.path", server.attributes.get(
                "http.target", "")))
            if target.startswith("/item/") and target != "/item/0":
                trace = [s for s in spans if s.trace_id == server.trace_id and s is not server]
                out[target.rsplit("/", 1)[1]] = (server, trace)
    return out


def _gunicorn(*args: str) -> list[str]:
    help_text = subprocess.run([sys.executable, "-m", "gunicorn", "--help"], text=True,
                               capture_output=True, timeout=60).stdout
    extra = ["--no-control-socket"] if "--no-control-socket" in help_text else []
    return ["gunicorn", *extra, *args]


def _on_path(env: dict[str, str]) -> dict[str, str]:
    """This venv's scripts (gunicorn, uvicorn) first on PATH, as an activated venv has."""
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def readme_production_command() -> list[str]:
    """The first command of README's "In production" section, as written."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("## In production", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return shlex.split(block.strip())


def test_the_readme_production_recipe_exports_view_spans_under_request_spans(
        tmp_path: Path, collector: Collector) -> None:
    """issue 24.1: README's ``autotrace -p myapp --backend auto --min-duration 1ms
    --require-parent gunicorn myapp.wsgi``, as written (plus where to listen): the command
    loads the Flask instrumentation, the view's span sits under its request's SERVER span,
    the fast helper is dropped, and the teardown that runs after the request span ended
    makes no span (no parent)."""
    pytest.importorskip("gunicorn")
    pytest.importorskip("opentelemetry.instrumentation.flask")
    command = readme_production_command()
    assert command[:2] == ["autotrace", "-p"] and command[-2:] == ["gunicorn", "myapp.wsgi"]
    write(tmp_path, "myapp/__init__.py", FLASK_APP)
    write(tmp_path, "myapp/wsgi.py", "from myapp import app as application\n")
    port = free_port()
    env = _on_path(_server_env(collector, OTEL_TRACES_EXPORTER="otlp"))
    command = [*command[:-2], *_gunicorn("-b", f"127.0.0.1:{port}", command[-1])]
    with serving(command, tmp_path, env, port) as server:
        _requests(port, range(1, 4))
    spans = collector.wait_for(8, limit=30)
    requests = _by_request(spans, "GET /item/<int:n>")
    assert sorted(requests) == ["1", "2", "3"], (server.output, spans)  # type: ignore[attr-defined]
    for request, trace in requests.values():
        assert [s.name for s in trace] == ["item"], trace
        assert trace[0].parent_id == request.span_id
    names = {s.name for s in spans}
    assert "helper" not in names and "close_db" not in names
    assert "matched no function" not in server.output  # type: ignore[attr-defined]


@pytest.mark.parametrize("worker", ["sync", "gthread"])
@pytest.mark.parametrize("preload", [False, True], ids=["", "preload"])
def test_gunicorn_workers_trace_each_request_and_flush_on_sigterm(
        tmp_path: Path, collector: Collector, worker: str, preload: bool) -> None:
    """issue 24.4: two workers, forked from a master that imported the app (``--preload``)
    or not: every request's trace has the view and its helper under the SERVER span, and
    the spans still in the batch queue at SIGTERM are exported (the schedule is 1 min)."""
    pytest.importorskip("gunicorn")
    pytest.importorskip("opentelemetry.instrumentation.flask")
    write(tmp_path, "svc.py", FLASK_APP)
    port = free_port()
    env = _on_path(_server_env(collector, OTEL_TRACES_EXPORTER="otlp"))
    args = ["-b", f"127.0.0.1:{port}", "-w", "2", "-k", worker, "--threads", "2",
            "--graceful-timeout", "20", *(["--preload"] if preload else []), "svc:app"]
    command = [*AUTOTRACE, "-p", "svc", "--require-parent", *_gunicorn(*args)]
    with serving(command, tmp_path, env, port) as server:
        _requests(port, range(1, 7))
    spans = collector.wait_for(6 * 3, limit=30)
    requests = _by_request(spans, "GET /item/<int:n>")
    output = server.output  # type: ignore[attr-defined]
    assert sorted(requests) == [str(n) for n in range(1, 7)], (output, spans)
    for request, trace in requests.values():
        view = next(s for s in trace if s.name == "item")
        assert view.parent_id == request.span_id
        helper = next(s for s in trace if s.name == "helper")
        assert helper.parent_id == view.span_id
    assert "matched no function" not in output
    assert "Traceback" not in output, output


def test_uvicorn_workers_trace_async_endpoints_in_the_request_trace(
        tmp_path: Path, collector: Collector, backend: str) -> None:
    """issue 24.4: uvicorn with 2 worker processes (spawned) for a Starlette app: the
    ``async def`` endpoint, and the coroutines it gathers as tasks, are in the request's
    trace, under its SERVER span; spans flushed at SIGTERM."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("opentelemetry.instrumentation.starlette")
    write(tmp_path, "svc.py", STARLETTE_APP)
    port = free_port()
    env = _on_path(_server_env(collector, OTEL_TRACES_EXPORTER="otlp"))
    command = [*AUTOTRACE, "-p", "svc", "--backend", backend, "--require-parent",
               "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
               "--timeout-graceful-shutdown", "20", "svc:app"]
    with serving(command, tmp_path, env, port) as server:
        _requests(port, range(1, 5))
    spans = collector.wait_for(4 * 5, limit=30)
    output = server.output  # type: ignore[attr-defined]
    requests = _by_request(spans, "GET /item/{n:int}")
    assert sorted(requests) == ["1", "2", "3", "4"], (output, spans)
    for request, trace in requests.values():
        view = next(s for s in trace if s.name == "item")
        ancestors = {s.span_id: s.parent_id for s in trace}
        parent = view.parent_id  # under the SERVER span, maybe through ASGI's own spans
        while parent in ancestors:
            parent = ancestors[parent]
        assert parent == request.span_id, trace
        gathered = next(s for s in trace if s.name == "both")
        assert gathered.parent_id == view.span_id
        computes = [s for s in trace if s.name == "compute"]
        assert len(computes) == 2 and {s.parent_id for s in computes} == {gathered.span_id}
    assert "matched no function" not in output
    assert "Traceback" not in output, output


CLIENT = ("import svc; client = svc.app.test_client(); "
          "print(client.get('/item/1').data, client.get('/item/2').data)")


@pytest.mark.parametrize("how", ["on", "off", "disabled", "distro"])
def test_the_command_loads_the_installed_instrumentations(tmp_path: Path, how: str) -> None:
    """issue 24.1: as opentelemetry-instrument does, unless ``--instrumentations off`` or
    ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names it; ``distro`` runs the distro's
    configurator too, whose provider (console exporter here) then gets every span."""
    pytest.importorskip("opentelemetry.instrumentation.flask")
    write(tmp_path, "svc.py", FLASK_APP)
    env = clean_env()
    flags = ["-p", "svc"]
    if how == "off":
        flags += ["--instrumentations", "off"]
    elif how == "disabled":
        env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "requests, flask"
    elif how == "distro":
        pytest.importorskip("opentelemetry.distro")
        flags += ["--instrumentations", "distro"]
        env.update(OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="none",
                   OTEL_LOGS_EXPORTER="none")
    out = subprocess.run([*AUTOTRACE, *flags, sys.executable, "-c", CLIENT], cwd=tmp_path,
                         env=env, text=True, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("b'2' b'4'\n")
    if how == "distro":  # the SDK's ConsoleSpanExporter, on stdout: the distro's provider
        assert out.stdout.count('"name": "GET /item/<int:n>"') == 2, out.stdout
        assert out.stdout.count('"name": "item"') == 2
        return
    roots = [line for line in out.stderr.splitlines() if line.startswith("  ")
             and not line.startswith("   ")]
    if how == "on":
        assert [root.split("  ")[1] for root in roots] == [
            "[SERVER] GET /item/<int:n>", "close_db(exc=None) -> None"] * 2, out.stderr
        assert "\n    item(n=1) -> '2'" in out.stderr
    else:
        assert [root.split("  ")[1] for root in roots] == [
            "item(n=1) -> '2'", "close_db(exc=None) -> None",
            "item(n=2) -> '4'", "close_db(exc=None) -> None"], out.stderr


SELF_CONFIGURED = '''
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

def show():
    spans = exporter.get_finished_spans()
    names = {s.context.span_id: s.name for s in spans}
    for s in spans:
        print(s.name, "<", names.get(s.parent.span_id) if s.parent else None)
'''


@pytest.mark.parametrize("require_parent", [False, True])
@pytest.mark.parametrize("instrumentation", ["flask", "wsgi-middleware"])
def test_a_teardown_after_the_request_span_is_kept_out_or_joins_the_request(
        tmp_path: Path, instrumentation: str, require_parent: bool) -> None:
    """issue 24.5: Flask runs ``teardown_appcontext`` functions (flaskr's ``close_db``) after
    FlaskInstrumentor has ended the request span and restored the context: such a call is
    its own one-span trace, or, with ``--require-parent``, makes no span. Under the WSGI
    middleware, whose span covers the whole WSGI call, it is in the request's trace."""
    pytest.importorskip("opentelemetry.instrumentation.flask")
    source = FLASK_APP
    env = clean_env()
    client = CLIENT
    if instrumentation == "wsgi-middleware":  # a program that configures OpenTelemetry itself
        source = SELF_CONFIGURED + source + (
            "from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware\n"
            "app.wsgi_app = OpenTelemetryMiddleware(app.wsgi_app)\n")
        env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "flask"
        client += "; svc.show()"
    write(tmp_path, "svc.py", source)
    flags = ["-p", "svc", *(["--require-parent"] if require_parent else [])]
    out = subprocess.run([*AUTOTRACE, *flags, sys.executable, "-c", client], cwd=tmp_path,
                         env=env, text=True, capture_output=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("b'2' b'4'\n"), out.stderr
    if instrumentation == "wsgi-middleware":  # (name, parent's name), as the program saw them
        pairs = [tuple(line.split(" < ")) for line in out.stdout.splitlines()[1:]]
        for n in (1, 2):
            assert ("close_db", f"GET /item/{n}") in pairs, out.stdout
            assert ("item", f"GET /item/{n}") in pairs
        return
    tree = [line for line in out.stderr.splitlines() if line.startswith("  ")]
    roots = [line.split("  ")[1] for line in tree if not line.startswith("   ")]
    if require_parent:
        assert [root.split(" ")[0] for root in roots] == ["[SERVER]"] * 2, out.stderr
        assert not any("close_db" in line for line in tree)
    else:
        assert roots[1] == roots[3] == "close_db(exc=None) -> None", out.stderr
