"""Bad configuration fails fast at install(), names the bad value, and installs nothing."""

from __future__ import annotations

import sys
from typing import Any

import pytest

import autotrace
from autotrace.config import make_config


def _nothing_installed(meta_path_before: list[Any]) -> None:
    assert autotrace.active_installation() is None
    assert sys.meta_path == meta_path_before


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        pytest.param({"patterns": []}, ValueError, "patterns is empty", id="empty-list"),
        pytest.param({"patterns": ""}, ValueError, "empty string", id="empty-string"),
        pytest.param({"patterns": ["ok", ""]}, ValueError, "empty string", id="empty-entry"),
        pytest.param({"patterns": [42]}, TypeError, "42", id="non-string-entry"),
        pytest.param({"patterns": 42}, TypeError, "patterns=42", id="non-string"),
        pytest.param({"patterns": b"myapp"}, TypeError, "b'myapp'", id="bytes"),
        pytest.param({"patterns": ["my app"]}, ValueError, "'my app'", id="whitespace"),
        pytest.param({"patterns": [" myapp"]}, ValueError, "whitespace", id="leading-space"),
        pytest.param({"patterns": ["a,b"]}, ValueError, "comma", id="comma"),
        pytest.param({"patterns": ["myapp."]}, ValueError, "empty dotted part", id="trailing-dot"),
        pytest.param({"patterns": ["my/app"]}, ValueError, "'my/app'", id="slash"),
        pytest.param({"patterns": ["x"], "exclude": [3]}, TypeError, "3", id="bad-exclude"),
        pytest.param({"patterns": ["x"], "backend": "fast"}, ValueError, "'fast'",
                     id="unknown-backend"),
        pytest.param({"patterns": ["x"], "backend": 1}, ValueError, "backend=1",
                     id="non-string-backend"),
        pytest.param({"patterns": ["x"], "capture_args": "yes"}, TypeError, "capture_args",
                     id="non-bool-capture"),
        pytest.param({"patterns": ["x"], "max_value_length": 3}, ValueError,
                     "max_value_length=3", id="tiny-length"),
        pytest.param({"patterns": ["x"], "max_value_length": "9"}, TypeError,
                     "max_value_length='9'", id="string-length"),
        pytest.param({"patterns": ["x"], "redact": ["("]}, ValueError, "'('",
                     id="bad-redact-regex"),
        pytest.param({"patterns": ["x"], "tracer_provider": object()}, TypeError,
                     "tracer_provider", id="bad-provider"),
    ],
)
def test_bad_argument_fails_fast_and_installs_nothing(
        kwargs: dict[str, Any], error: type[Exception], fragment: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_PYTHON_AUTOTRACE_PATTERNS", raising=False)
    before = list(sys.meta_path)
    with pytest.raises(error) as info:
        autotrace.install(**kwargs)
    assert fragment in str(info.value)
    _nothing_installed(before)


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("OTEL_PYTHON_AUTOTRACE_BACKEND", "fastest", "'fastest'"),
        ("OTEL_PYTHON_AUTOTRACE_CAPTURE_ARGS", "maybe", "OTEL_PYTHON_AUTOTRACE_CAPTURE_ARGS"),
        ("OTEL_PYTHON_AUTOTRACE_CAPTURE_RETURN", "2", "OTEL_PYTHON_AUTOTRACE_CAPTURE_RETURN"),
        ("OTEL_PYTHON_AUTOTRACE_MAX_VALUE_LENGTH", "lots", "'lots'"),
        ("OTEL_PYTHON_AUTOTRACE_EXCLUDE", "a b", "'a b'"),
        ("OTEL_PYTHON_AUTOTRACE_PATTERNS", "my app", "'my app'"),
    ],
)
def test_bad_environment_value_fails_fast(var: str, value: str, fragment: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_AUTOTRACE_PATTERNS", "myapp")
    monkeypatch.setenv(var, value)
    before = list(sys.meta_path)
    with pytest.raises((ValueError, TypeError)) as info:
        autotrace.install()
    assert fragment in str(info.value)
    _nothing_installed(before)


def test_missing_patterns_names_the_environment_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_PYTHON_AUTOTRACE_PATTERNS", raising=False)
    with pytest.raises(ValueError, match="OTEL_PYTHON_AUTOTRACE_PATTERNS"):
        autotrace.install()


def test_environment_supplies_what_arguments_leave_out() -> None:
    env = {
        "OTEL_PYTHON_AUTOTRACE_PATTERNS": "app, lib.core",
        "OTEL_PYTHON_AUTOTRACE_EXCLUDE": "app.vendored",
        "OTEL_PYTHON_AUTOTRACE_BACKEND": "WRAPT",
        "OTEL_PYTHON_AUTOTRACE_CAPTURE_ARGS": "False",
        "OTEL_PYTHON_AUTOTRACE_CAPTURE_RETURN": "true",
        "OTEL_PYTHON_AUTOTRACE_MAX_VALUE_LENGTH": "100",
        "OTEL_PYTHON_AUTOTRACE_REDACT": "pin,ssn",
    }
    config = make_config(environ=env)
    assert config.patterns == ("app", "lib.core")
    assert config.exclude == ("app.vendored",)
    assert config.backend == "wrapt"
    assert config.capture_args is False and config.capture_return is True
    assert config.max_value_length == 100
    assert config.redact == ("pin", "ssn")
    explicit = make_config(["other"], capture_args=True, environ=env)
    assert explicit.patterns == ("other",) and explicit.capture_args is True


def test_second_install_raises_and_keeps_the_first(provider: Any) -> None:
    first = autotrace.install(["nothing_here_x"], tracer_provider=provider)
    before = list(sys.meta_path)
    with pytest.raises(RuntimeError, match="already installed"):
        autotrace.install(["other_y"], tracer_provider=provider)
    assert autotrace.active_installation() is first
    assert sys.meta_path == before


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="monitoring exists on 3.12+")
def test_monitoring_backend_before_312_is_a_clear_error() -> None:
    before = list(sys.meta_path)
    with pytest.raises(RuntimeError) as info:
        autotrace.install(["x"], backend="monitoring")
    message = str(info.value)
    assert "3.12" in message and "backend='wrapt'" in message
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in message
    _nothing_installed(before)


def test_auto_backend_picks_the_best_available(provider: Any) -> None:
    inst = autotrace.install(["nothing_here_z"], backend="auto", tracer_provider=provider)
    expected = "monitoring" if sys.version_info >= (3, 12) else "wrapt"
    assert inst.backend == expected
