"""Bad configuration fails fast at install(), names the bad value, and installs nothing."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

import autotrace
from autotrace.config import make_config


def _tools() -> list[Any]:
    monitoring = getattr(sys, "monitoring", None)
    return [] if monitoring is None else [monitoring.get_tool(i) for i in range(6)]


def _nothing_installed(meta_path_before: list[Any], tools_before: list[Any] | None = None
                       ) -> None:
    assert autotrace.active_installation() is None
    assert sys.meta_path == meta_path_before
    assert _tools() == (tools_before if tools_before is not None else _tools())
    assert "autotrace" not in _tools(), "a sys.monitoring tool id stayed claimed"


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


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        pytest.param({"patterns": None}, ValueError, "OTEL_PYTHON_AUTOTRACE_PATTERNS",
                     id="patterns-None-and-no-environment"),
        pytest.param({"patterns": ["ok", None]}, TypeError, "None", id="patterns-None-entry"),
        pytest.param({"patterns": {"myapp"}}, TypeError, "{'myapp'}", id="patterns-set"),
        pytest.param({"patterns": {"myapp": 1}}, TypeError, "{'myapp': 1}",
                     id="patterns-dict"),
        pytest.param({"patterns": [["myapp"]]}, TypeError, "['myapp']",
                     id="patterns-nested-list"),
        pytest.param({"patterns": ("ok", 3.5)}, TypeError, "3.5", id="patterns-tuple-float"),
        pytest.param({"patterns": bytearray(b"x")}, TypeError, "bytearray",
                     id="patterns-bytearray"),
        pytest.param({"patterns": ["x\x00y"]}, ValueError, "'x\\x00y'", id="patterns-nul"),
        pytest.param({"patterns": [".myapp"]}, ValueError, "empty dotted part",
                     id="patterns-leading-dot"),
        pytest.param({"patterns": ["a..b"]}, ValueError, "empty dotted part",
                     id="patterns-double-dot"),
        pytest.param({"patterns": ["my\tapp"]}, ValueError, "whitespace",
                     id="patterns-tab"),
        pytest.param({"patterns": ["x"], "exclude": ""}, ValueError, "empty string",
                     id="exclude-empty-string"),
        pytest.param({"patterns": ["x"], "exclude": 7}, TypeError, "exclude=7",
                     id="exclude-int"),
        pytest.param({"patterns": ["x"], "exclude": ["a b"]}, ValueError, "'a b'",
                     id="exclude-whitespace"),
        pytest.param({"patterns": ["x"], "backend": ""}, ValueError, "backend=''",
                     id="backend-empty"),
        pytest.param({"patterns": ["x"], "backend": "WRAPT"}, ValueError, "'WRAPT'",
                     id="backend-uppercase"),
        pytest.param({"patterns": ["x"], "backend": ["wrapt"]}, ValueError, "['wrapt']",
                     id="backend-list"),
        pytest.param({"patterns": ["x"], "capture_return": 1}, TypeError, "capture_return=1",
                     id="capture-return-int"),
        pytest.param({"patterns": ["x"], "repr_objects": "no"}, TypeError, "repr_objects='no'",
                     id="repr-objects-string"),
        pytest.param({"patterns": ["x"], "max_value_length": 10.5}, TypeError,
                     "max_value_length=10.5", id="length-float"),
        pytest.param({"patterns": ["x"], "max_value_length": True}, TypeError,
                     "max_value_length=True", id="length-bool"),
        pytest.param({"patterns": ["x"], "max_value_length": -1}, ValueError,
                     "max_value_length=-1", id="length-negative"),
        pytest.param({"patterns": ["x"], "redact": 5}, TypeError, "redact=5", id="redact-int"),
        pytest.param({"patterns": ["x"], "redact": b"pw"}, TypeError, "redact=b'pw'",
                     id="redact-bytes"),
        pytest.param({"patterns": ["x"], "redact": ["ok", 1]}, TypeError, "1",
                     id="redact-int-entry"),
        pytest.param({"patterns": ["x"], "redact": "[a-"}, ValueError, "'[a-'",
                     id="redact-bad-regex-string"),
        pytest.param({"patterns": ["x"], "redact_values": ["acct-(\\d+"]}, ValueError,
                     "redact_values entry 'acct-(\\\\d+' is not a valid regular expression",
                     id="redact-values-bad-regex"),
        pytest.param({"patterns": ["x"], "redact_values": ["x|"]}, ValueError,
                     "matches the empty string", id="redact-values-empty-match"),
        pytest.param({"patterns": ["x"], "redact_disable": ["JWT"]}, ValueError,
                     "'JWT' is not a value detector; use any of private_key, jwt",
                     id="redact-disable-unknown"),
        pytest.param({"patterns": ["x"], "redact_disable": 3}, TypeError,
                     "redact_disable=3", id="redact-disable-int"),
        pytest.param({"patterns": ["x"], "tracer_provider": TracerProvider}, TypeError,
                     "is a class", id="provider-class-not-instance"),
        pytest.param({"patterns": ["x"], "tracer_provider": "global"}, TypeError,
                     "tracer_provider='global'", id="provider-string"),
    ],
)
def test_more_bad_arguments_fail_fast_and_install_nothing(
        kwargs: dict[str, Any], error: type[Exception], fragment: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("OTEL_PYTHON_AUTOTRACE_")]:
        monkeypatch.delenv(var)
    before, tools = list(sys.meta_path), _tools()
    with pytest.raises(error) as info:
        autotrace.install(**kwargs)
    assert fragment in str(info.value), str(info.value)
    _nothing_installed(before, tools)


_ENV_GARBAGE = [
    ("OTEL_PYTHON_AUTOTRACE_PATTERNS", ",,,", "OTEL_PYTHON_AUTOTRACE_PATTERNS is empty"),
    ("OTEL_PYTHON_AUTOTRACE_PATTERNS", "a..b", "'a..b'"),
    ("OTEL_PYTHON_AUTOTRACE_PATTERNS", "my/app", "'my/app'"),
    ("OTEL_PYTHON_AUTOTRACE_PATTERNS", "x;y", "OTEL_PYTHON_AUTOTRACE_PATTERNS"),
    ("OTEL_PYTHON_AUTOTRACE_EXCLUDE", "a..b", "OTEL_PYTHON_AUTOTRACE_EXCLUDE"),
    ("OTEL_PYTHON_AUTOTRACE_EXCLUDE", "ok,bad name", "'bad name'"),
    ("OTEL_PYTHON_AUTOTRACE_BACKEND", "wrapt2", "OTEL_PYTHON_AUTOTRACE_BACKEND='wrapt2'"),
    ("OTEL_PYTHON_AUTOTRACE_BACKEND", "auto,wrapt", "'auto,wrapt'"),
    ("OTEL_PYTHON_AUTOTRACE_CORE", "fast", "OTEL_PYTHON_AUTOTRACE_CORE='fast'"),
    ("OTEL_PYTHON_AUTOTRACE_CAPTURE_ARGS", "tru", "OTEL_PYTHON_AUTOTRACE_CAPTURE_ARGS='tru'"),
    ("OTEL_PYTHON_AUTOTRACE_CAPTURE_RETURN", "maybe", "OTEL_PYTHON_AUTOTRACE_CAPTURE_RETURN"),
    ("OTEL_PYTHON_AUTOTRACE_REPR_OBJECTS", "sometimes", "OTEL_PYTHON_AUTOTRACE_REPR_OBJECTS"),
    ("OTEL_PYTHON_AUTOTRACE_REPR_OBJECTS", "2", "OTEL_PYTHON_AUTOTRACE_REPR_OBJECTS='2'"),
    ("OTEL_PYTHON_AUTOTRACE_MAX_VALUE_LENGTH", "-5", "OTEL_PYTHON_AUTOTRACE_MAX_VALUE_LENGTH=-5"),
    ("OTEL_PYTHON_AUTOTRACE_MAX_VALUE_LENGTH", "1e3", "'1e3'"),
    ("OTEL_PYTHON_AUTOTRACE_MAX_VALUE_LENGTH", "0x100", "'0x100'"),
    ("OTEL_PYTHON_AUTOTRACE_MAX_VALUE_LENGTH", "8", "OTEL_PYTHON_AUTOTRACE_MAX_VALUE_LENGTH=8"),
    ("OTEL_PYTHON_AUTOTRACE_REDACT", "(", "OTEL_PYTHON_AUTOTRACE_REDACT entry '('"),
    ("OTEL_PYTHON_AUTOTRACE_REDACT", "ok,[z-a]", "'[z-a]'"),
    ("OTEL_PYTHON_AUTOTRACE_REDACT_VALUES", "acct-(", "OTEL_PYTHON_AUTOTRACE_REDACT_VALUES "
     "entry 'acct-('"),
    ("OTEL_PYTHON_AUTOTRACE_REDACT_VALUES", "x,[0-9]*", "'[0-9]*' matches the empty string"),
    ("OTEL_PYTHON_AUTOTRACE_REDACT_DISABLE", "jwt,jwts", "'jwts' is not a value detector"),
    ("OTEL_PYTHON_AUTOTRACE_MIN_DURATION", "5 ms", "OTEL_PYTHON_AUTOTRACE_MIN_DURATION='5 ms'"),
    ("OTEL_PYTHON_AUTOTRACE_MIN_DURATION", "-3", "positive"),
    ("OTEL_PYTHON_AUTOTRACE_KEEP_ERRORS", "perhaps", "OTEL_PYTHON_AUTOTRACE_KEEP_ERRORS"),
    ("OTEL_PYTHON_AUTOTRACE_KEEP_HANDLED_ERRORS", "maybe",
     "OTEL_PYTHON_AUTOTRACE_KEEP_HANDLED_ERRORS"),
    ("OTEL_PYTHON_AUTOTRACE_REQUIRE_PARENT", "2", "OTEL_PYTHON_AUTOTRACE_REQUIRE_PARENT='2'"),
    ("OTEL_PYTHON_AUTOTRACE_MAX_DEPTH", "0", "OTEL_PYTHON_AUTOTRACE_MAX_DEPTH=0"),
    ("OTEL_PYTHON_AUTOTRACE_MAX_DEPTH", "deep", "'deep'"),
    ("OTEL_PYTHON_AUTOTRACE_SPANS", "some", "OTEL_PYTHON_AUTOTRACE_SPANS='some'"),
    ("OTEL_PYTHON_AUTOTRACE_METRICS", "yes please", "OTEL_PYTHON_AUTOTRACE_METRICS"),
    ("OTEL_PYTHON_AUTOTRACE_SUPPRESS_HOT", "hot", "OTEL_PYTHON_AUTOTRACE_SUPPRESS_HOT"),
    ("OTEL_PYTHON_AUTOTRACE_HOT_CALLS", "0", "OTEL_PYTHON_AUTOTRACE_HOT_CALLS=0"),
    ("OTEL_PYTHON_AUTOTRACE_HOT_CALLS", "many", "'many'"),
    ("OTEL_PYTHON_AUTOTRACE_HOT_DURATION", "fast", "'fast'"),
    ("OTEL_PYTHON_AUTOTRACE_HOT_DURATION", "-1us", "positive duration"),
    ("OTEL_PYTHON_AUTOTRACE_PROFILE", "maybe", "OTEL_PYTHON_AUTOTRACE_PROFILE"),
]

#: Settings of the command's runtime only, checked by ``check_command_settings``.
_COMMAND_GARBAGE = [
    ("OTEL_PYTHON_AUTOTRACE_PROPAGATE", "sure", "OTEL_PYTHON_AUTOTRACE_PROPAGATE='sure'"),
]


@pytest.mark.parametrize(("var", "value", "fragment"), [
    pytest.param(var, value, fragment, id=f"{var.removeprefix('OTEL_PYTHON_AUTOTRACE_')}={value!r}")
    for var, value, fragment in _ENV_GARBAGE
])
def test_garbage_in_each_environment_variable_fails_fast(
        var: str, value: str, fragment: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for other in [v for v in os.environ if v.startswith("OTEL_PYTHON_AUTOTRACE_")]:
        monkeypatch.delenv(other)
    if var != "OTEL_PYTHON_AUTOTRACE_PATTERNS":
        monkeypatch.setenv("OTEL_PYTHON_AUTOTRACE_PATTERNS", "myapp")
    monkeypatch.setenv(var, value)
    before, tools = list(sys.meta_path), _tools()
    with pytest.raises((ValueError, TypeError)) as info:
        autotrace.install()
    assert fragment in str(info.value), str(info.value)
    _nothing_installed(before, tools)


@pytest.mark.parametrize(("var", "value", "fragment"), _COMMAND_GARBAGE)
def test_garbage_in_each_command_variable_is_reported(var: str, value: str,
                                                      fragment: str) -> None:
    from autotrace.config import check_command_settings

    with pytest.raises(ValueError) as info:
        check_command_settings({var: value})
    assert fragment in str(info.value)


def test_every_environment_variable_has_a_garbage_case() -> None:
    from autotrace.config import OPTIONS

    names = {option.env for option in OPTIONS if option.env_var and option.api}
    assert names == {var for var, _, _ in _ENV_GARBAGE}
    # (a trace-file path has no garbage form: an unwritable one is tested in test_tracefile)
    command = {option.env for option in OPTIONS if not option.api and option.is_bool}
    assert command == {var for var, _, _ in _COMMAND_GARBAGE}


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="monitoring exists on 3.12+")
def test_monitoring_from_the_environment_before_312_is_a_clear_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_AUTOTRACE_PATTERNS", "myapp")
    monkeypatch.setenv("OTEL_PYTHON_AUTOTRACE_BACKEND", "monitoring")
    before = list(sys.meta_path)
    with pytest.raises(RuntimeError, match=r"3\.12"):
        autotrace.install()
    _nothing_installed(before)


def test_non_ascii_module_names_are_valid_patterns(provider: Any) -> None:
    inst = autotrace.install(["café", "données.*"], tracer_provider=provider)
    assert inst.config.patterns == ("café", "données.*")


def test_a_bad_instrumentations_value_names_the_choices() -> None:
    """issue 24: the command-only choice fails before the program starts."""
    from autotrace.config import check_command_settings

    with pytest.raises(ValueError, match=r"OTEL_PYTHON_AUTOTRACE_INSTRUMENTATIONS='maybe' is "
                                         r"not a instrumentations; use one of 'on', 'distro', "
                                         r"'off'"):
        check_command_settings({"OTEL_PYTHON_AUTOTRACE_INSTRUMENTATIONS": "maybe"})
    check_command_settings({"OTEL_PYTHON_AUTOTRACE_INSTRUMENTATIONS": " OFF "})
