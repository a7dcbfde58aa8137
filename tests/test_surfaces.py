"""Every bad value is reported in the syntax of the surface it was given on (issue 13.12).

The same bad value goes in through ``install()`` (keyword), the variable (through
``install()`` and through the command) and the ``autotrace`` flag (the command's own
parser; a few cases through the real command). The message must name the
option as that surface spells it, and any example it gives must be valid there:
no Python list in a shell, no ``--flag`` in Python.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import autotrace
from autotrace.config import OPTIONS_BY_NAME
from autotrace.zerocode import cli

from .clihelp import AUTOTRACE, clean_env, run, write

#: option -> bad values given as text (variables and flags) and as Python values.
BAD = {
    "patterns": [",,", "a b", "x[", "a..b", "$x", ""],
    "exclude": ["x[", "a b", "a..b"],
    "backend": ["nope"],
    "capture_args": ["maybe"],
    "max_value_length": ["x", "3"],
    "redact": ["("],
    "redact_values": ["(", "[0-9]*"],
    "redact_disable": ["nope"],
}
CASES = [(name, value) for name, values in BAD.items() for value in values]


def _api_error(name: str, value: Any) -> str:
    kwargs = {} if name == "patterns" else {name: value}
    patterns = value if name == "patterns" else "x"
    with pytest.raises((ValueError, TypeError, RuntimeError)) as info:
        autotrace.install(patterns, **kwargs)
    return str(info.value)


def _env_error(name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> str:
    option = OPTIONS_BY_NAME[name]
    monkeypatch.setenv("OTEL_PYTHON_AUTOTRACE_PATTERNS", "x")
    monkeypatch.setenv(option.env, value)
    with pytest.raises((ValueError, TypeError, RuntimeError)) as info:
        autotrace.install()
    return str(info.value)


def _flag_error(argv: list[str], environ: dict[str, str] | None = None) -> str:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        cli.prepare([*argv, "python", "app.py"], environ or {})
    assert info.value.code == 2
    return err.getvalue()


def _flag_args(name: str, value: str) -> list[str]:
    option = OPTIONS_BY_NAME[name]
    assert option.flag is not None
    return [f"{option.flag}={value}"]



def _examples(message: str) -> list[str]:
    """What follows each "e.g." and "Use" in a message: the examples it gives."""
    return re.findall(r"(?:e\.g\.|Use|or) ([^\s,;]+)", message)


def _assert_examples(message: str, prefix: str, name: str) -> None:
    for example in _examples(message):
        if "=" in example or example.startswith("-") or example.startswith("'"):
            assert example.startswith(prefix), f"example {example!r} for {name}: {message}"


@pytest.mark.parametrize(("name", "value"), CASES)
def test_api_errors_speak_python(name: str, value: str) -> None:
    message = _api_error(name, value)
    option = OPTIONS_BY_NAME[name]
    assert message.startswith(f"{name}") or f"{name}=" in message, message
    assert option.env not in message and "--" not in message, message
    _assert_examples(message, f"{name}=", name)


@pytest.mark.parametrize(("name", "value"), CASES)
def test_variable_errors_speak_shell(name: str, value: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    option = OPTIONS_BY_NAME[name]
    message = _env_error(name, value, monkeypatch)
    assert option.env in message, message
    # Python syntax appears only after "install()", as the other way to give it.
    shell_part = message.split("autotrace.install()")[0].split("or unset it")[0]
    assert "=[" not in shell_part and f"{name}=" not in shell_part, message
    assert "--" not in message, message
    _assert_examples(shell_part, f"{option.env}=", name)


@pytest.mark.parametrize(("name", "value"), CASES)
def test_flag_errors_speak_flags(name: str, value: str) -> None:
    option = OPTIONS_BY_NAME[name]
    message = _flag_error(_flag_args(name, value))
    assert str(option.flag) in message, message
    text = message.split("error:", 1)[1]
    assert "=[" not in text and f"{name}=" not in text and option.env not in text, message
    _assert_examples(text, option.short or str(option.flag), name)


@pytest.mark.parametrize(("name", "value"), CASES)
def test_variables_under_the_command_speak_shell(name: str, value: str) -> None:
    option = OPTIONS_BY_NAME[name]
    environ = {"OTEL_PYTHON_AUTOTRACE_PATTERNS": "x", option.env: value}
    message = _flag_error([], environ)
    assert option.env in message, message
    text = message.split("error:", 1)[1]
    assert "=[" not in text and f" {name}=" not in text, message
    _assert_examples(text.split("or unset it")[0], f"{option.env}=", name)


def test_the_real_command_rejects_an_unclosed_glob_before_the_program_starts(
        tmp_path: Path) -> None:
    """issue 13.14: ``-p 'seedtest['`` used to be accepted and matched nothing."""
    write(tmp_path, "seedtest.py", "print('started')\n")
    out = run([*AUTOTRACE, "-p", "seedtest[", sys.executable, "seedtest.py"], tmp_path)
    assert out.returncode == 2
    assert out.stdout == ""
    assert "-p/--patterns entry 'seedtest[' has a '[' without its ']'" in out.stderr
    assert "-p 'myapp.v[12]'" in out.stderr


def test_the_real_command_names_an_empty_pattern_flag_as_a_flag(tmp_path: Path) -> None:
    write(tmp_path, "app.py", "print('started')\n")
    out = run([*AUTOTRACE, "-p", "", sys.executable, "app.py"], tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert "e.g. -p myapp" in out.stderr and "=[" not in out.stderr


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the monitoring backend runs on 3.12+")
@pytest.mark.parametrize("how", ["flag", "variable"])
def test_a_backend_that_cannot_run_is_a_bad_option_of_the_command(tmp_path: Path,
                                                                   how: str) -> None:
    """issue 13.13: status 2 before the program starts, not a hint and an untraced run."""
    write(tmp_path, "app.py", "print('started')\n")
    env = clean_env()
    args = [*AUTOTRACE, "-p", "app"]
    if how == "flag":
        args += ["--backend", "monitoring"]
    else:
        env["OTEL_PYTHON_AUTOTRACE_BACKEND"] = "monitoring"
    out = run([*args, sys.executable, "app.py"], tmp_path, env=env)
    assert out.returncode == 2, out
    assert out.stdout == ""
    shown = "--backend 'monitoring'" if how == "flag" else "OTEL_PYTHON_AUTOTRACE_BACKEND="
    assert shown in out.stderr and "needs Python 3.12" in out.stderr
    fix = "--backend wrapt" if how == "flag" else "OTEL_PYTHON_AUTOTRACE_BACKEND=wrapt"
    assert fix in out.stderr


@pytest.mark.parametrize("how", ["flag", "default"])
def test_the_wrapt_backend_without_wrapt_s_extension_is_refused_by_the_command(
        tmp_path: Path, how: str) -> None:
    """wrapt's pure-Python proxies store their target where the backend does not look:
    it would trace nothing. Status 2 and the fix, chosen or by default."""
    write(tmp_path, "app.py", "print('started')\n")
    env = clean_env()
    env["WRAPT_DISABLE_EXTENSIONS"] = "true"
    args = [*AUTOTRACE, "-p", "app"] + (["--backend", "wrapt"] if how == "flag" else [])
    out = run([*args, sys.executable, "app.py"], tmp_path, env=env)
    assert out.returncode == 2, out
    assert out.stdout == ""
    assert "WRAPT_DISABLE_EXTENSIONS is set" in out.stderr and "--backend" in out.stderr
    if sys.version_info >= (3, 12):
        assert "--backend monitoring" in out.stderr


def test_install_refuses_the_wrapt_backend_over_wrapt_s_pure_python_proxies(
        tmp_path: Path) -> None:
    """The same at install(), whether the backend was given or is the default, and the
    other backend still installs."""
    write(tmp_path, "probe.py", textwrap.dedent("""
        import sys, autotrace
        from opentelemetry.sdk.trace import TracerProvider
        for kwargs in ({"backend": "wrapt"}, {}):
            try:
                autotrace.install(["x"], tracer_provider=TracerProvider(), **kwargs)
            except autotrace.InstallError as exc:
                print("refused:", exc)
            else:
                print("installed")
                autotrace.uninstall()
        if sys.version_info >= (3, 12):
            autotrace.install(["x"], backend="monitoring", tracer_provider=TracerProvider())
            print("monitoring installed")
    """))
    env = clean_env()
    env["WRAPT_DISABLE_EXTENSIONS"] = "1"
    out = run([sys.executable, "probe.py"], tmp_path, env=env)
    assert out.returncode == 0, out
    lines = out.stdout.splitlines()
    assert len(lines) >= 2 and all(line.startswith("refused: ") for line in lines[:2]), out
    assert "backend='wrapt'" in lines[0] and "WRAPT_DISABLE_EXTENSIONS" in lines[0]
    if sys.version_info >= (3, 12):
        assert "backend='monitoring'" in lines[0]
        assert lines[2:] == ["monitoring installed"]


def test_spans_off_with_nothing_else_to_record_is_refused_on_every_surface(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``spans=False`` alone would trace nothing at a cost: told in each surface's words."""
    with pytest.raises(ValueError) as api:
        autotrace.install("x", spans=False)
    assert "spans=False" in str(api.value)
    assert "metrics=True" in str(api.value) and "profile=True" in str(api.value)

    monkeypatch.setenv("OTEL_PYTHON_AUTOTRACE_PATTERNS", "x")
    monkeypatch.setenv("OTEL_PYTHON_AUTOTRACE_SPANS", "false")
    with pytest.raises(ValueError) as env:
        autotrace.install()
    assert "OTEL_PYTHON_AUTOTRACE_SPANS=false" in str(env.value)
    assert "OTEL_PYTHON_AUTOTRACE_METRICS=true" in str(env.value)
    monkeypatch.delenv("OTEL_PYTHON_AUTOTRACE_SPANS")

    flag = _flag_error(["-p", "x", "--no-spans"])
    assert "--no-spans" in flag and "--metrics" in flag and "--profile" in flag
    assert "OTEL_" not in flag and "=" not in flag
    # with something to record, each surface accepts it
    for extra in (["--metrics"], ["--profile"]):
        _command, environ = cli.prepare(["-p", "x", "--no-spans", *extra, "python", "a.py"],
                                        {})
        assert environ["OTEL_PYTHON_AUTOTRACE_SPANS"] == "false"
    autotrace.install("x", spans=False, profile=True).uninstall()
