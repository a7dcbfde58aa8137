"""The production recipes, one per stack, run exactly as written (issue 24.6).

Each line of the ```bash block under "## Recipes" in ``docs/production.md`` runs on a
small app of that stack, with this venv's scripts first on PATH, spans exported to a
real collector; the test checks the spans that stack should give. Servers bind
127.0.0.1 (the recipe's own command line plus ``-b``/``--host``/``--port``, appended by
the test), every wait is bounded, and a server is stopped with SIGTERM (its spans
flushed then).
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from .clihelp import clean_env, write
from .collector import CollectedSpan, Collector, collector, free_port
from .test_servers import _get, _on_path, _server_env, serving

__all__ = ["collector"]  # the fixture

PRODUCTION = Path(__file__).resolve().parents[1] / "docs" / "production.md"


def recipes() -> dict[str, str]:
    """The recipe lines by stack: each ``# comment`` line names the command after it."""
    section = PRODUCTION.read_text().split("## Recipes", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    out, stack = {}, ""
    for line in block.splitlines():
        if line.startswith("# ") and not line.startswith("#   "):
            if line[2:3].isupper() or line.startswith(("# a ", "# pytest")):
                stack = line[2:].split(":")[0].split(" (")[0].strip().lower()
        elif line.strip():
            out[stack] = line.strip()
    return out


def test_the_recipes_cover_the_stacks() -> None:
    assert set(recipes()) == {"flask", "django", "fastapi / starlette", "a job runner",
                              "a plain script", "pytest"}


FLASK = '''
from flask import Flask
app = Flask(__name__)

def total(n):
    return sum(range(n))

@app.route("/item/<int:n>")
def item(n):
    return str(total(n * 100000))
'''

STARLETTE = '''
import asyncio
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

async def slow(n):
    await asyncio.sleep(0.003)
    return n

async def item(request):
    return PlainTextResponse(str(await slow(int(request.path_params["n"]))))

app = Starlette(routes=[Route("/item/{n:int}", item)])
'''

DJANGO = {
    "mysite/__init__.py": "",
    "mysite/settings.py": '''
        SECRET_KEY = "test"
        DEBUG = False
        ALLOWED_HOSTS = ["127.0.0.1"]
        ROOT_URLCONF = "mysite.urls"
        INSTALLED_APPS = ["polls"]
        MIDDLEWARE = []
        DATABASES = {}
    ''',
    "mysite/urls.py": '''
        from django.urls import path
        from polls import views
        urlpatterns = [path("item/<int:n>", views.ItemView.as_view())]
    ''',
    "mysite/wsgi.py": '''
        from django.core.wsgi import get_wsgi_application
        application = get_wsgi_application()
    ''',
    "polls/__init__.py": "",
    "polls/views.py": '''
        import time
        from django.http import HttpResponse
        from django.views import View

        def compute(n):
            time.sleep(0.003)
            return n * 2

        class ItemView(View):
            def get(self, request, n):
                return HttpResponse(str(compute(n)))
    ''',
}

JOB_RUNNER = {
    "myapp/__init__.py": "",
    "myapp/jobs.py": '''
        import time

        def resize(n):
            time.sleep(0.003)
            return n * 2
    ''',
    "myapp/worker.py": '''
        from opentelemetry import trace
        from myapp import jobs

        tracer = trace.get_tracer("myapp.worker")

        def run(queue):
            for n in queue:
                with tracer.start_as_current_span("job resize"):  # the job's span
                    jobs.resize(n)

        def housekeeping():
            return jobs.resize(0)  # outside any job: no span under --require-parent

        housekeeping()
        run([1, 2, 3])
    ''',
}

SCRIPT = '''
import myapp

def main():
    return myapp.work(2)

print("result", main())
'''

PYTEST = '''
import myapp

def test_work():
    assert myapp.work(2) == 3
'''


def _run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(shlex.split(command), cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=180)


def _serve_and_get(command: str, cwd: Path, env: dict[str, str], bind: list[str],
                   port: int) -> str:
    with serving([*shlex.split(command)[:-1], *bind, shlex.split(command)[-1]], cwd, env,
                 port) as server:
        for n in (1, 2):
            _get(f"http://127.0.0.1:{port}/item/{n}")
    return str(server.output)  # type: ignore[attr-defined]


def _under_servers(spans: list[CollectedSpan], name: str) -> list[CollectedSpan]:
    """The spans called ``name`` whose parent is a SERVER span (request /item/1 or 2)."""
    by_id = {s.span_id: s for s in spans}
    return [s for s in spans if s.name == name and s.parent_id in by_id
            and "SERVER" in by_id[s.parent_id].kind.upper()
            and str(by_id[s.parent_id].attributes.get("url.path", by_id[s.parent_id]
                                                      .attributes.get("http.target", "")))
            != "/item/0"]


def _env(collector: Collector, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = _on_path(_server_env(collector, OTEL_TRACES_EXPORTER="otlp", **extra))
    env["PYTHONPATH"] = str(tmp_path)
    return env


def test_flask_recipe(tmp_path: Path, collector: Collector) -> None:
    pytest.importorskip("gunicorn")
    pytest.importorskip("opentelemetry.instrumentation.flask")
    command = recipes()["flask"]
    write(tmp_path, "myapp.py", FLASK)
    port = free_port()
    output = _serve_and_get(command, tmp_path, _env(collector, tmp_path),
                            ["-b", f"127.0.0.1:{port}"], port)
    spans = collector.wait_for(4, limit=30)
    assert len(_under_servers(spans, "item")) == 2, (output, spans)


def test_django_recipe(tmp_path: Path, collector: Collector) -> None:
    """Django's instrumentation needs DJANGO_SETTINGS_MODULE in the environment (else every
    request fails with a 500): the recipe sets it."""
    pytest.importorskip("gunicorn")
    pytest.importorskip("django")
    pytest.importorskip("opentelemetry.instrumentation.django")
    command = recipes()["django"]
    for path, source in DJANGO.items():
        write(tmp_path, path, source)
    port = free_port()
    env = _env(collector, tmp_path)
    assignment, command = command.split(" ", 1)  # VAR=value autotrace ...
    name, value = assignment.split("=", 1)
    env[name] = value
    output = _serve_and_get(command, tmp_path, env, ["-b", f"127.0.0.1:{port}"], port)
    spans = collector.wait_for(4, limit=30)
    views = _under_servers(spans, "ItemView.get")
    assert len(views) == 2, (output, [(s.name, s.kind) for s in spans])
    assert {s.name for s in spans if s.parent_id in {v.span_id for v in views}} == {"compute"}


def test_starlette_recipe(tmp_path: Path, collector: Collector) -> None:
    pytest.importorskip("uvicorn")
    pytest.importorskip("opentelemetry.instrumentation.starlette")
    command = recipes()["fastapi / starlette"]
    write(tmp_path, "myapp.py", STARLETTE)
    port = free_port()
    output = _serve_and_get(command, tmp_path, _env(collector, tmp_path),
                            ["--host", "127.0.0.1", "--port", str(port)], port)
    spans = collector.wait_for(6, limit=30)
    by_id = {s.span_id: s for s in spans}
    items = [s for s in spans if s.name == "item"]
    assert len(items) >= 2, (output, [(s.name, s.kind) for s in spans])
    for span in items:  # under its request's SERVER span
        assert "SERVER" in by_id[span.parent_id].kind.upper()
        assert [s.name for s in spans if s.parent_id == span.span_id] == ["slow"]


def test_job_runner_recipe(tmp_path: Path, collector: Collector) -> None:
    command = recipes()["a job runner"]
    for path, source in JOB_RUNNER.items():
        write(tmp_path, path, source)
    env = _env(collector, tmp_path, OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")
    out = _run(command, tmp_path, env)
    assert out.returncode == 0, out.stderr
    spans = collector.wait_for(6, limit=30)
    jobs = {s.span_id for s in spans if s.name == "job resize"}
    resized = [s for s in spans if s.name == "resize"]
    assert len(jobs) == 3 and len(resized) == 3, spans
    assert {s.parent_id for s in resized} == jobs  # housekeeping's call made none


def test_plain_script_recipe(tmp_path: Path) -> None:
    command = recipes()["a plain script"]
    write(tmp_path, "myapp.py", "def work(x):\n    return x + 1\n")
    write(tmp_path, "script.py", SCRIPT)
    env = _on_path(clean_env())
    out = _run(command, tmp_path, env)
    assert out.returncode == 0 and out.stdout == "result 3\n", out.stderr
    assert "  main() -> 3  " in out.stderr and "    work(x=2) -> 3  " in out.stderr


def test_pytest_recipe(tmp_path: Path) -> None:
    command = recipes()["pytest"]
    write(tmp_path, "myapp.py", "def work(x):\n    return x + 1\n")
    write(tmp_path, "test_myapp.py", PYTEST)
    env = _on_path(clean_env())
    out = _run(command, tmp_path, env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout
    assert "\n  work(x=2) -> 3  " in out.stderr, out.stderr
