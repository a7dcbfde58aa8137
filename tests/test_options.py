"""One table of options (``autotrace.config.OPTIONS``) feeds every surface; nothing drifts."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk import metrics as sdk_metrics
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.trace import TracerProvider

import autotrace
from autotrace import configfile
from autotrace.config import (
    API,
    API_OPTIONS,
    ENV_PREFIX,
    FILE_OPTIONS,
    FILE_SYNTAX,
    OPTIONS,
    Config,
    Option,
    command_setting,
    make_config,
    parse_bool,
    parse_detectors,
    parse_duration,
    parse_int,
    parse_patterns,
    parse_provider,
    parse_regexes,
    read_settings,
)
from autotrace.zerocode import environment_variables
from autotrace.zerocode.cli import build_parser
from autotrace.zerocode.instrumentor import INSTALL_OPTIONS

README = Path(__file__).resolve().parent.parent / "README.md"
CONFIG_PAGE = README.parent / "docs" / "config-file.md"
SYNC_SCRIPT = README.parent / "scripts" / "sync_options.py"
_ROW = re.compile(r"^\| `(?P<name>\w+)` \| (?P<env>[^|]+) \| (?P<flag>[^|]+) \|", re.M)


def test_install_keywords_and_config_fields_are_the_options() -> None:
    names = [option.name for option in API_OPTIONS]
    assert list(inspect.signature(autotrace.install).parameters) == names
    assert [field.name for field in dataclasses.fields(Config)] == names
    assert set(INSTALL_OPTIONS) == {option.name for option in API_OPTIONS if option.env_var}


def _hints(option: Option) -> tuple[Any, Any]:
    """The ``install()`` and ``Config`` annotations that ``option``'s parser and default
    call for: what a caller may pass, and what the rest of autotrace gets."""
    if option.parse in (parse_patterns, parse_regexes, parse_detectors):
        given, kept = str | Sequence[str], tuple[str, ...]
    elif option.parse is parse_bool:
        given, kept = bool, bool
    elif option.parse is parse_int:
        given, kept = int, int
    elif option.parse is parse_duration:
        given, kept = float | str, float
    elif option.parse is parse_provider:
        given = {"get_tracer": TracerProvider, "get_meter": MeterProvider}[
            option.provider_method]
        return given | None, Any
    else:  # a choice, a backend, a text
        given, kept = str, str
    return given | None, kept | None if option.default is None else kept


def test_install_signature_and_config_fields_follow_each_option() -> None:
    """A new ``api`` row in ``OPTIONS`` needs its ``Config`` field and its ``install()``
    keyword; this test says the two lines to write (type checkers and editors see them)."""
    signature = inspect.signature(autotrace.install)
    install_hints = get_type_hints(autotrace.install)
    config_hints = get_type_hints(Config)
    defaults = {field.name: field.default for field in dataclasses.fields(Config)}
    for option in API_OPTIONS:
        given, kept = _hints(option)
        parameter = signature.parameters.get(option.name)
        line = f"    {option.name}: {_spell(given)} = None,"
        assert parameter is not None, f"add to install()'s keywords: {line}"
        kind = (inspect.Parameter.POSITIONAL_OR_KEYWORD if option.name == "patterns"
                else inspect.Parameter.KEYWORD_ONLY)
        assert parameter.kind == kind, option.name
        assert parameter.default is None, f"install(): {line}"
        assert install_hints[option.name] == given, f"install(): {line}"
        field = f"    {option.name}: {_spell(kept)} = {option.default!r}"
        assert config_hints.get(option.name) == kept, f"Config: {field}"
        if not option.required:
            assert defaults[option.name] == option.default, f"Config: {field}"


def test_config_fields_and_install_keywords_are_generated_from_the_table() -> None:
    """scripts/sync_options.py writes them: a new option is one row, then the script."""
    spec = importlib.util.spec_from_file_location("sync_options", SYNC_SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.stale() == [], "run python scripts/sync_options.py"
    for option in API_OPTIONS:
        annotation = inspect.signature(autotrace.install).parameters[option.name].annotation
        assert annotation == option.api_hint, option.name
        assert Config.__annotations__[option.name] == option.config_hint, option.name


def _spell(hint: Any) -> str:
    return (getattr(hint, "__name__", None) if isinstance(hint, type) else None) or str(
        hint).replace("collections.abc.", "").replace("typing.", "")


def _a_value(option: Option) -> Any:
    """A value for ``option`` other than its default, from its ``api_example``."""
    providers = {"TracerProvider": sdk_trace.TracerProvider,
                 "MeterProvider": sdk_metrics.MeterProvider}
    value = eval(option.api_example, providers)
    if option.parse(option, value, API) == option.default:
        value = value + 1 if isinstance(value, int) else "3ms"
    return value


def test_every_install_keyword_reaches_the_config(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``install()`` passes each keyword on by name: one left out would be lost silently."""
    monkeypatch.chdir(tmp_path)  # no configuration file
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    given = {option.name: _a_value(option) for option in API_OPTIONS}
    config = autotrace.install(**given).config
    for option in API_OPTIONS:
        got = getattr(config, option.name)
        assert got != option.default, option.name
        assert got == option.parse(option, given[option.name], API), option.name


def test_the_command_flags_are_the_options_flags() -> None:
    ours = {"-h", "--help", "--exporter", "--version"}
    expected: dict[str, str] = {}
    for option in OPTIONS:
        if option.flag is not None:
            names = [option.flag, option.short] if option.short else [option.flag]
            if option.is_bool:
                names.append("--no-" + option.flag[2:])
            expected.update({name: option.name for name in names})
    actual = {name: action.dest for action in build_parser()._actions
              for name in action.option_strings if name not in ours}
    assert actual == expected


def test_every_option_a_variable_can_give_is_a_file_key(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The file's keys are the options' names; each example in file syntax (as error
    messages show it) is valid TOML and reaches the setting."""
    assert [option.name for option in FILE_OPTIONS] == [
        option.name for option in OPTIONS if option.env_var]
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    lines = [FILE_SYNTAX.example(option) for option in FILE_OPTIONS]
    (tmp_path / "autotrace.toml").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    config = make_config()
    for option in FILE_OPTIONS:
        expected = option.parse(option, eval(option.api_example), API)
        if option.api:
            assert getattr(config, option.name) == expected, option.name
        else:
            assert command_setting(option.name, os.environ) == expected, option.name


def test_the_config_file_page_is_valid(tmp_path: Path) -> None:
    """Every TOML example in docs/config-file.md is read without an error, and the
    page states the precedence."""
    text = CONFIG_PAGE.read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for number, block in enumerate(blocks):
        name = "pyproject.toml" if "[tool.autotrace]" in block else "autotrace.toml"
        path = tmp_path / str(number) / name
        path.parent.mkdir()
        path.write_text(block)
        found = configfile.find({}, str(path.parent))
        assert found is not None and found.path == str(path), block
        assert read_settings(found)[0], block
    assert ("`install()` keyword > command-line flag > environment variable > "
            "configuration file > default") in text


def test_every_variable_is_an_opentelemetry_instrument_option_and_a_flag() -> None:
    exported = {name for name in dir(environment_variables) if name.startswith("OTEL_")}
    assert exported == {option.env for option in OPTIONS
                        if option.env_var and option.otel_instrument}
    # issue 24: what only the command reads is not offered by opentelemetry-instrument
    assert "OTEL_PYTHON_AUTOTRACE_TRACE_FILE" not in exported
    assert "OTEL_PYTHON_AUTOTRACE_INSTRUMENTATIONS" not in exported
    flags = {action.dest for action in build_parser()._actions}
    for option in OPTIONS:
        if option.flag is not None:
            assert option.name in flags
        assert option.instrument_flag == "--autotrace_" + option.name


def test_bare_boolean_flags_of_opentelemetry_instrument_mean_true() -> None:
    """issue 24: ``--autotrace_require_parent`` alone, or followed by a true/false word."""
    bare = environment_variables.bare_booleans
    assert bare(["oi", "--autotrace_require_parent", "gunicorn", "--preload", "app:app"]) == [
        "oi", "--autotrace_require_parent=true", "gunicorn", "--preload", "app:app"]
    assert bare(["oi", "--autotrace_require_parent", "False", "python", "-c", "pass"]) == [
        "oi", "--autotrace_require_parent=False", "python", "-c", "pass"]
    # a value-taking flag's value is never read as a flag; nothing after the command changes
    assert bare(["oi", "--autotrace_patterns", "true", "--autotrace_spans", "python",
                 "--autotrace_spans"]) == [
        "oi", "--autotrace_patterns", "true", "--autotrace_spans=true", "python",
        "--autotrace_spans"]
    assert bare(["oi", "--traces_exporter=console", "--autotrace_metrics", "--",
                 "x"]) == ["oi", "--traces_exporter=console", "--autotrace_metrics=true",
                           "--", "x"]
