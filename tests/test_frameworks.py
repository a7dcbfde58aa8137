"""Real frameworks that register functions as they are defined: Flask routes, click
commands, pytest fixtures. The wrapt backend reaches them because it wraps each
``def`` before the framework's decorator sees it."""

from __future__ import annotations

import importlib
import os
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .clihelp import AUTOTRACE, clean_env, ctrl_c_works, run, tree_lines, write
from .conftest import Traced, parent_name

flask = pytest.importorskip("flask")
click_testing = pytest.importorskip("click.testing")

NOTES = '''
from flask import Flask, jsonify

app = Flask(__name__)

def load_notes(user):
    return [f"{user}-note"]

@app.route("/notes/<user>")
def list_notes(user):
    return jsonify(load_notes(user))

@app.get("/health")
def health():
    return "ok"
'''


def test_flask_views_are_traced_through_the_test_client(traced: Traced) -> None:
    mod = traced.load("notes", NOTES)
    client = mod.app.test_client()
    assert client.get("/notes/ann").get_json() == ["ann-note"]
    assert client.get("/health").data == b"ok"
    assert traced.names() == ["load_notes", "list_notes", "health"]
    assert parent_name(traced.spans(), traced.span("load_notes")) == "list_notes"
    assert traced.args("list_notes") == {"user": "ann"}


CLI = '''
import click

@click.group()
@click.option("--verbose", is_flag=True)
def cli(verbose):
    pass

def greeting(name):
    return f"hello {name}"

@cli.command()
@click.argument("name")
def hello(name):
    click.echo(greeting(name))
'''


def test_click_commands_are_traced(traced: Traced) -> None:
    if traced.backend == "monitoring":
        pytest.xfail("monitoring finds code objects by walking the module after its body "
                     "ran; click.Command objects hide the callback from that walk")
    mod = traced.load("cli", CLI)
    result = click_testing.CliRunner().invoke(mod.cli, ["--verbose", "hello", "bob"])
    assert result.exit_code == 0, result.output
    assert result.output == "hello bob\n"
    assert traced.names() == ["cli", "greeting", "hello"]
    assert traced.args("hello") == {"name": "bob"}
    assert mod.hello.name == "hello" and mod.hello.callback.__name__ == "hello"


def test_pytest_fixtures_are_traced(tmp_path: Path) -> None:
    write(tmp_path, "appfixtures.py", '''
        import pytest

        @pytest.fixture
        def store():
            return {"a": 1}

        @pytest.fixture
        def session(store):
            yield dict(store, open=True)

        def lookup(store, key):
            return store[key]
    ''')
    write(tmp_path, "conftest.py", "from appfixtures import store, session\n")
    write(tmp_path, "test_app.py", '''
        from appfixtures import lookup

        def test_lookup(session):
            assert lookup(session, "a") == 1
    ''')
    out = run([*AUTOTRACE, "-p", "appfixtures", sys.executable, "-m", "pytest", "-q",
               "-p", "no:cacheprovider", "test_app.py"], tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout
    calls = [line.split("  ")[-2].strip() if "  " in line.strip() else line.strip()
             for line in tree_lines(out.stderr)]
    text = "\n".join(tree_lines(out.stderr))
    assert "store() -> " in text and "session(" in text and "lookup(" in text, out.stderr
    assert calls


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_flask_run_under_the_autotrace_command(tmp_path: Path) -> None:
    """``autotrace -p notes flask --app notes.app run``: the new user's first try."""
    write(tmp_path, "notes/__init__.py", "")
    write(tmp_path, "notes/app.py", NOTES)
    port = _free_port()
    env = clean_env(FLASK_RUN_HOST="127.0.0.1")
    flask_exe = os.path.join(os.path.dirname(sys.executable), "flask")
    process = __import__("subprocess").Popen(
        [*AUTOTRACE, "-p", "notes", flask_exe, "--app", "notes.app", "run", "--port",
         str(port)], cwd=tmp_path, env=env, stdout=__import__("subprocess").PIPE,
        stderr=__import__("subprocess").PIPE, text=True, preexec_fn=ctrl_c_works)
    try:
        body = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/notes/ann",
                                            timeout=5) as response:
                    body = response.read()
                break
            except OSError:
                if process.poll() is not None:
                    break
                time.sleep(0.2)
        assert body == b'["ann-note"]\n', process.stderr.read() if process.poll() else body
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=30)
        except Exception:
            process.kill()
            _, stderr = process.communicate()
    lines = tree_lines(stderr)
    # issue 24: the command loads Flask's instrumentation: the request span is the root
    assert any(line.startswith("  [SERVER] GET /notes/<user>  ") for line in lines), stderr
    assert any(line.startswith("    list_notes(user='ann') -> ") for line in lines), stderr
    assert any(line.startswith("      load_notes(user='ann') -> ") for line in lines), stderr


def test_the_modules_imported_before_install_keep_todays_wrapping(traced: Traced) -> None:
    name = traced.modules.module("early", NOTES)
    mod = importlib.import_module(name)
    traced.install([name])
    client = mod.app.test_client()
    assert client.get("/notes/ann").get_json() == ["ann-note"]
    # the URL map kept the raw view; the helper, looked up at call time, is traced
    expected = ["load_notes", "list_notes"] if traced.backend == "monitoring" \
        else ["load_notes"]
    assert traced.names() == expected
