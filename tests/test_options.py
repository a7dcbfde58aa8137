"""One table of options (``autotrace.config.OPTIONS``) feeds every surface; nothing drifts."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import autotrace
from autotrace.config import API_OPTIONS, OPTIONS, Config
from autotrace.zerocode import environment_variables
from autotrace.zerocode.cli import build_parser
from autotrace.zerocode.instrumentor import INSTALL_OPTIONS

README = Path(__file__).resolve().parent.parent / "README.md"
_ROW = re.compile(r"^\| `(?P<name>\w+)` \| (?P<env>[^|]+) \| (?P<flag>[^|]+) \|", re.M)


def _readme_rows() -> dict[str, tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| `install()` keyword |"):]
    table = table[:table.index("\n\n")]
    return {m["name"]: (m["env"].strip(), m["flag"].strip()) for m in _ROW.finditer(table)}


def test_readme_configuration_table_matches_the_options() -> None:
    rows = _readme_rows()
    assert list(rows) == [option.name for option in OPTIONS]
    for option in OPTIONS:
        env, flag = rows[option.name]
        assert env == (f"`{option.env}`" if option.env_var else "—"), option.name
        if option.flag is None:
            assert flag == "—", option.name
            continue
        assert f"`{option.flag}`" in flag, option.name
        if option.is_bool:
            assert f"`--no-{option.flag[2:]}`" in flag, option.name
        if option.short:
            assert f"`{option.short}`" in flag, option.name


def test_install_keywords_and_config_fields_are_the_options() -> None:
    names = [option.name for option in API_OPTIONS]
    assert list(inspect.signature(autotrace.install).parameters) == names
    assert list(Config.__dataclass_fields__) == names
    assert set(INSTALL_OPTIONS) == {option.name for option in API_OPTIONS if option.env_var}


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
