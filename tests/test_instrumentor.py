"""autotrace as an OpenTelemetry instrumentor, in-process and under opentelemetry-instrument."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import autotrace
from autotrace.zerocode.environment_variables import OTEL_PYTHON_AUTOTRACE_PATTERNS

from .clihelp import clean_env, run, write
from .conftest import Traced

pytest.importorskip("opentelemetry.instrumentation.instrumentor")

from autotrace.zerocode.instrumentor import AutotraceInstrumentor

OTEL_INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"


def test_instrument_and_uninstrument(traced: Traced, monkeypatch: pytest.MonkeyPatch) -> None:
    name = traced.modules.module("inst", "def work(x):\n    return x + 1\n")
    monkeypatch.setenv(OTEL_PYTHON_AUTOTRACE_PATTERNS, name)
    monkeypatch.setenv("OTEL_PYTHON_AUTOTRACE_BACKEND", traced.backend)
    instrumentor = AutotraceInstrumentor()
    instrumentor.instrument(tracer_provider=traced.provider)
    try:
        module = __import__(name)
        assert module.work(1) == 2
        assert traced.names() == ["work"]
        assert autotrace.active_installation() is not None
    finally:
        instrumentor.uninstrument()
    traced.clear()
    assert module.work(1) == 2
    assert traced.names() == []
    assert autotrace.active_installation() is None


def test_install_options_can_be_passed_to_instrument(traced: Traced) -> None:
    name = traced.modules.module("opts", "def work(x):\n    return x + 1\n")
    instrumentor = AutotraceInstrumentor()
    instrumentor.instrument(tracer_provider=traced.provider, patterns=[name],
                            backend=traced.backend, capture_args=False)
    try:
        assert __import__(name).work(1) == 2
        assert traced.args("work") == {}
    finally:
        instrumentor.uninstrument()


def test_without_patterns_it_does_nothing_and_says_so(caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OTEL_PYTHON_AUTOTRACE_PATTERNS, raising=False)
    instrumentor = AutotraceInstrumentor()
    with caplog.at_level(logging.DEBUG, logger="autotrace"):
        instrumentor.instrument()
    try:
        assert autotrace.active_installation() is None
        messages = [r.getMessage() for r in caplog.records if r.name == "autotrace"]
        assert any("no patterns" in m and OTEL_PYTHON_AUTOTRACE_PATTERNS in m
                   for m in messages)
        assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "autotrace")
    finally:
        instrumentor.uninstrument()


def test_a_bad_setting_is_logged_not_raised(caplog: pytest.LogCaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OTEL_PYTHON_AUTOTRACE_PATTERNS, "my app")
    instrumentor = AutotraceInstrumentor()
    with caplog.at_level(logging.DEBUG, logger="autotrace"):
        instrumentor.instrument()
    try:
        assert autotrace.active_installation() is None
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any(OTEL_PYTHON_AUTOTRACE_PATTERNS in m and "whitespace" in m for m in errors)
    finally:
        instrumentor.uninstrument()


def test_entry_points_are_registered() -> None:
    found = {ep.name: ep for ep in entry_points(group="opentelemetry_instrumentor")}
    assert found["autotrace"].load() is AutotraceInstrumentor
    env_modules = {ep.name: ep for ep in entry_points(group="opentelemetry_environment_variables")}
    module = env_modules["autotrace"].load()
    names = {name for name in dir(module) if name.startswith("OTEL_")}
    assert {"OTEL_PYTHON_AUTOTRACE_PATTERNS", "OTEL_PYTHON_AUTOTRACE_EXCLUDE",
            "OTEL_PYTHON_AUTOTRACE_BACKEND", "OTEL_PYTHON_AUTOTRACE_CAPTURE_ARGS",
            "OTEL_PYTHON_AUTOTRACE_CAPTURE_RETURN"} <= names
    assert all(getattr(module, name) == name for name in names)


JOB = '''
class Job:
    def run(self, n):
        return sum(step(i) for i in range(n))

def step(i):
    return i * i

if __name__ == "__main__":
    print("total", Job().run(3))
'''


def console_spans(stdout: str) -> list[dict[str, object]]:
    """The JSON spans ConsoleSpanExporter printed, amid the program's own output."""
    decoder = json.JSONDecoder()
    spans, index = [], 0
    while (start := stdout.find("{", index)) >= 0:
        span, index = decoder.raw_decode(stdout, start)
        spans.append(span)
    return spans


@pytest.mark.skipif(not OTEL_INSTRUMENT.exists(), reason="opentelemetry-instrument not installed")
@pytest.mark.parametrize("disabled", [False, True])
def test_opentelemetry_instrument_traces_the_main_script(tmp_path: Path, backend: str,
                                                         disabled: bool) -> None:
    pytest.importorskip("opentelemetry.distro")
    write(tmp_path, "job.py", JOB)
    env = clean_env(OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="none",
                    OTEL_LOGS_EXPORTER="none", OTEL_PYTHON_AUTOTRACE_BACKEND=backend)
    if disabled:
        env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "autotrace"
    out = run([str(OTEL_INSTRUMENT), "--autotrace_patterns", "job", sys.executable, "job.py"],
              tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("total 5\n")
    spans = console_spans(out.stdout)
    if disabled:
        assert spans == []
        return
    assert sorted(str(s["name"]) for s in spans) == ["Job.run", "step", "step", "step"]
    run_span = next(s for s in spans if s["name"] == "Job.run")
    assert {s["parent_id"] for s in spans if s["name"] == "step"} == {
        run_span["context"]["span_id"]}  # type: ignore[index]
    assert run_span["attributes"]["code.function.return.value"] == 5  # type: ignore[index]


def _readme_block(heading: str) -> list[str]:
    """The lines of the first ```bash block under ``heading`` in README.md."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split(heading, 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


@pytest.mark.skipif(not OTEL_INSTRUMENT.exists(), reason="opentelemetry-instrument not installed")
def test_the_readme_opentelemetry_instrument_command_works_as_written(tmp_path: Path) -> None:
    """issue 13.4: README's command failed in a fresh venv (no OTLP/gRPC metrics exporter).
    Run it verbatim, with this venv's ``python`` and ``opentelemetry-instrument`` first on
    PATH, on a ``myapp`` module and an ``app.py`` that uses it."""
    pytest.importorskip("opentelemetry.distro")
    command = _readme_block("### `opentelemetry-instrument`")[-1]
    assert command.startswith("opentelemetry-instrument ")
    write(tmp_path, "myapp.py", "def work(x):\n    return x + 1\n")
    write(tmp_path, "app.py", "import myapp\nprint('result', myapp.work(1))\n")
    env = clean_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    out = run(shlex.split(command), tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("result 2\n")
    spans = console_spans(out.stdout)
    assert [s["name"] for s in spans] == ["work"]
    assert "Traceback" not in out.stderr


@pytest.mark.skipif(not OTEL_INSTRUMENT.exists(), reason="opentelemetry-instrument not installed")
def test_opentelemetry_instrument_flags_have_help_and_bare_booleans(tmp_path: Path) -> None:
    """issue 24: help texts, ``--autotrace_require_parent`` given bare or with a word."""
    pytest.importorskip("opentelemetry.distro")
    help_text = run([str(OTEL_INSTRUMENT), "--help"], tmp_path).stdout
    assert re.search(r"--autotrace_require_parent \{true,false\}\s+trace only calls that "
                     r"start while a\s+valid span", help_text), help_text
    assert "--autotrace_trace_file" not in help_text  # the command's, not offered here
    assert "--autotrace_instrumentations" not in help_text
    write(tmp_path, "job.py", JOB)
    env = clean_env(OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="none",
                    OTEL_LOGS_EXPORTER="none")
    for given, names in ((["--autotrace_require_parent"], []),
                         (["--autotrace_require_parent", "true"], []),
                         (["--autotrace_require_parent", "no"], ["Job.run"] + ["step"] * 3),
                         ([], ["Job.run"] + ["step"] * 3)):
        out = run([str(OTEL_INSTRUMENT), "--autotrace_patterns", "job", *given,
                   sys.executable, "job.py"], tmp_path, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("total 5\n"), given
        assert sorted(str(s["name"]) for s in console_spans(out.stdout)) == names, given


@pytest.mark.skipif(not OTEL_INSTRUMENT.exists(), reason="opentelemetry-instrument not installed")
def test_a_run_that_exports_nothing_says_so_once(tmp_path: Path) -> None:
    """issue 24.6: without a configurator (no distro installed; here: one named that does
    not exist), opentelemetry-instrument sets no SDK provider and autotrace's spans went
    nowhere, silently; now one line says so, and what to install."""
    pytest.importorskip("opentelemetry.distro")
    write(tmp_path, "job.py", JOB)
    env = clean_env(OTEL_PYTHON_CONFIGURATOR="not-installed", OTEL_METRICS_EXPORTER="none",
                    OTEL_LOGS_EXPORTER="none")
    out = run([str(OTEL_INSTRUMENT), "--autotrace_patterns", "job", sys.executable, "job.py"],
              tmp_path, env=env)
    assert out.returncode == 0 and out.stdout == "total 5\n", out.stderr
    said = [line for line in out.stderr.splitlines() if line.startswith("autotrace:")]
    assert len(said) == 1 and "spans went nowhere" in said[0], out.stderr
    assert "pip install opentelemetry-distro" in said[0]
    configured = run([str(OTEL_INSTRUMENT), "--traces_exporter", "console",
                      "--autotrace_patterns", "job", sys.executable, "job.py"], tmp_path,
                     env=clean_env(OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none"))
    assert "went nowhere" not in configured.stderr
