"""The configuration file (issue 20): ``[tool.autotrace]`` in pyproject.toml, or autotrace.toml.

Real files in temporary directories, read by ``install()`` in this process, by the
real ``autotrace`` command and by ``opentelemetry-instrument`` in subprocesses. The
precedence is tested layer by layer: ``install()`` keyword > flag > variable > file >
default.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import autotrace
from autotrace import configfile
from autotrace.config import OPTIONS_BY_NAME, command_setting, file_variables, make_config
from autotrace.core import InstallError

from .clihelp import AUTOTRACE, clean_env, run, write

PROJECT = """\
[project]
name = "demo"

[tool.autotrace]
patterns = ["app"]
max_depth = 3
"""


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the current directory, with no autotrace variable set."""
    for name in list(os.environ):
        if name.startswith("OTEL_PYTHON_AUTOTRACE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _install_error(**kwargs: object) -> str:
    with pytest.raises(InstallError) as info:
        autotrace.install(**kwargs)  # type: ignore[arg-type]
    assert autotrace.core.active_installation() is None
    return str(info.value)


# -- finding the file ----------------------------------------------------------------

def test_the_file_is_found_from_a_subdirectory_upward(here: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    write(here, "pyproject.toml", PROJECT)
    deep = here / "src" / "app" / "deep"
    deep.mkdir(parents=True)
    # a sub-package's own pyproject.toml without the table does not stop the search
    write(here / "src", "pyproject.toml", "[project]\nname = 'inner'\n")
    monkeypatch.chdir(deep)
    config = autotrace.install().config
    assert config.patterns == ("app",)
    assert config.max_depth == 3


def test_autotrace_toml_wins_over_pyproject_in_the_same_directory(here: Path) -> None:
    write(here, "pyproject.toml", PROJECT)
    write(here, "autotrace.toml", 'patterns = ["own"]\n')
    config = autotrace.install().config
    assert config.patterns == ("own",)
    assert config.max_depth is None  # the pyproject.toml beside it is not read at all


def test_the_nearest_file_wins_and_an_empty_autotrace_toml_stops_the_search(
        here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(here, "pyproject.toml", PROJECT)
    write(here / "sub", "pyproject.toml", '[tool.autotrace]\npatterns = "near"\n')
    monkeypatch.chdir(here / "sub")
    assert autotrace.install().config.patterns == ("near",)
    autotrace.uninstall()
    write(here / "sub", "autotrace.toml", "")  # autotrace's own file counts even empty
    with pytest.raises(ValueError, match=r"needs patterns.*\[tool\.autotrace\]"):
        autotrace.install()


def test_no_file_anywhere_is_fine(here: Path) -> None:
    assert configfile.find({}, str(here)) is None
    assert autotrace.install("app").config.max_depth is None


def test_the_variable_names_the_file_or_none(here: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write(here, "pyproject.toml", PROJECT)
    elsewhere = write(here / "conf", "tracing.toml", 'patterns = ["named"]\nmax_depth = 9\n')
    monkeypatch.setenv("OTEL_PYTHON_AUTOTRACE_CONFIG", str(elsewhere))
    assert autotrace.install().config.max_depth == 9
    autotrace.uninstall()
    monkeypatch.setenv("OTEL_PYTHON_AUTOTRACE_CONFIG", "none")
    assert autotrace.install("x").config.max_depth is None
    autotrace.uninstall()
    monkeypatch.setenv("OTEL_PYTHON_AUTOTRACE_CONFIG", str(here / "missing.toml"))
    message = _install_error(patterns="x")
    assert "OTEL_PYTHON_AUTOTRACE_CONFIG=" in message and "no such file" in message


def test_the_toml_reader_is_tomllib_or_the_backport_on_310() -> None:
    expected = "tomllib" if sys.version_info >= (3, 11) else "tomli"
    assert configfile.tomllib.__name__ == expected


# -- precedence, layer by layer --------------------------------------------------------

def test_precedence_in_process(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """default < file < variable < install() keyword, for an int, a list and a bool."""
    assert make_config("x").max_depth is None  # default
    write(here, "pyproject.toml", '[tool.autotrace]\nmax_depth = 3\nexclude = ["a.b"]\n'
                                  "capture_args = false\n")
    config = make_config("x")
    assert (config.max_depth, config.exclude, config.capture_args) == (3, ("a.b",), False)
    monkeypatch.setenv("OTEL_PYTHON_AUTOTRACE_MAX_DEPTH", "4")
    monkeypatch.setenv("OTEL_PYTHON_AUTOTRACE_EXCLUDE", "")  # set but empty: none
    monkeypatch.setenv("OTEL_PYTHON_AUTOTRACE_CAPTURE_ARGS", "true")
    config = make_config("x")
    assert (config.max_depth, config.exclude, config.capture_args) == (4, (), True)
    config = autotrace.install("x", max_depth=5, exclude="c.d", capture_args=False).config
    assert (config.max_depth, config.exclude, config.capture_args) == (5, ("c.d",), False)


def test_an_empty_variable_of_a_single_value_leaves_it_to_the_file(
        here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(here, "autotrace.toml", "max_depth = 3\n")
    monkeypatch.setenv("OTEL_PYTHON_AUTOTRACE_MAX_DEPTH", " ")
    assert make_config("x").max_depth == 3


def test_command_settings_come_from_the_file_too(here: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    write(here, "autotrace.toml", "propagate = false\ninstrumentations = 'off'\n")
    assert command_setting("propagate", os.environ) is False
    assert command_setting("instrumentations", os.environ) == "off"
    monkeypatch.setenv("OTEL_PYTHON_AUTOTRACE_PROPAGATE", "true")
    assert command_setting("propagate", os.environ) is True


SHOW = """\
import autotrace.core as core
c = core.active_installation().config
print(c.max_depth, ",".join(c.exclude))
"""
SHOW_AFTER_INSTALL = """\
import autotrace
autotrace.install(max_depth=7)
import autotrace.core as core
c = core.active_installation().config
print(c.max_depth, ",".join(c.exclude))
"""


def test_precedence_under_the_command(tmp_path: Path) -> None:
    """default < file < variable < flag < the program's own install() keyword."""
    write(tmp_path, "show.py", SHOW)
    write(tmp_path, "again.py", SHOW_AFTER_INSTALL)
    layers = [
        ("default", [], {}, "show.py", "None "),
        ("file", [], {}, "show.py", "3 a.b"),
        ("variable", [], {"OTEL_PYTHON_AUTOTRACE_MAX_DEPTH": "4"}, "show.py", "4 a.b"),
        ("flag", ["--max-depth", "5", "--exclude", "c.d"],
         {"OTEL_PYTHON_AUTOTRACE_MAX_DEPTH": "4"}, "show.py", "5 c.d"),
        ("install()", ["--max-depth", "5"], {"OTEL_PYTHON_AUTOTRACE_MAX_DEPTH": "4"},
         "again.py", "7 a.b"),
    ]
    for layer, flags, variables, script, expected in layers:
        if layer == "file":
            write(tmp_path, "pyproject.toml", '[tool.autotrace]\npatterns = ["show"]\n'
                                              'max_depth = 3\nexclude = ["a.b"]\n')
        argv = [*AUTOTRACE, *flags] + ([] if layer != "default" else ["-p", "show"])
        out = run([*argv, sys.executable, script], tmp_path, env=clean_env(**variables))
        assert out.returncode == 0, (layer, out.stderr)
        assert out.stdout.splitlines()[-1] == expected, layer


CHILD = """\
import os, subprocess, sys
print("program", os.environ["OTEL_PYTHON_AUTOTRACE_CONFIG"],
      os.environ["OTEL_PYTHON_AUTOTRACE_REDACT"])
os.chdir(sys.argv[1])  # another project, with a file of its own
code = ("import autotrace.core as c; i = c.active_installation(); "
        "print('child', i.config.max_depth, i.config.redact, i.config.min_duration)")
subprocess.run([sys.executable, "-c", code], check=True)
"""


def test_the_command_reads_the_file_once_for_the_whole_run(tmp_path: Path) -> None:
    """Children get the values the command checked, in whatever directory they start."""
    write(tmp_path, "pyproject.toml",
          '[tool.autotrace]\npatterns = ["child"]\nmax_depth = 3\nmin_duration = "2ms"\n'
          "redact = ['a,b', 'x{1,2}']\n")
    write(tmp_path / "other", "autotrace.toml", 'patterns = ["other"]\nmax_depth = 9\n')
    write(tmp_path, "child.py", CHILD)
    out = run([*AUTOTRACE, sys.executable, "child.py", str(tmp_path / "other")], tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "program none a\\,b,x{1,2}"  # a comma inside a regex survives
    # the regex 'a,b' comes back as 'a\\,b': the same regex (an escaped comma is a comma)
    assert lines[1] == "child 3 ('a\\\\,b', 'x{1,2}') 0.002"


# -- errors: the file, the key and the accepted forms ----------------------------------

@pytest.mark.parametrize(("body", "fragments"), [
    ("nope = 1", ["unknown key 'nope'", "the keys are patterns, exclude, backend"]),
    ("pattern = ['a']", ["unknown key 'pattern'", "did you mean patterns?"]),
    ("max-depth = 3", ["unknown key 'max-depth'", "write max_depth"]),
    ("tracer_provider = 'x'", ["tracer_provider", "cannot be set in a file",
                               "tracer_provider=TracerProvider()"]),
    ("backend = 'nope'", ["backend = 'nope' in", "'wrapt', 'monitoring', 'auto'"]),
    ("capture_args = 'false'", ["capture_args = 'false' in",
                                "true or false (a TOML boolean: no quotes)"]),
    ("max_depth = '3'", ["max_depth = '3' in", "must be an integer, e.g. max_depth = 20"]),
    ("max_value_length = 3", ["max_value_length = 3 in", "too small",
                              "max_value_length = 256"]),
    ("min_duration = 5", ["min_duration = 5 in", "a string with its unit",
                          "min_duration = '1ms'"]),
    ("min_duration = '5'", ["min_duration = '5' in", "a string with its unit"]),
    ("patterns = 'a,b'", ["contains a comma", "patterns = ['a', 'b']"]),
    ("patterns = []", ["patterns in", "is empty", "patterns = ['myapp']"]),
    ("exclude = 3", ["exclude = 3 in", "a string or a list of strings"]),
    ("redact = ['(']", ["redact in", "not a valid regular expression"]),
    ("redact_disable = ['nope']", ["redact_disable in", "not a value detector"]),
    ("spans = false", ["spans = false turns spans off", "metrics = true",
                       "profile = true"]),
    ("[tool.autotrace.sub]\nx = 1", ["unknown key 'sub'"]),
])
def test_a_bad_key_or_value_fails_install_naming_file_key_and_forms(
        here: Path, body: str, fragments: list[str]) -> None:
    write(here, "pyproject.toml", "[tool.autotrace]\n" + body + "\n")
    message = _install_error(patterns="x")
    where = f"{here / 'pyproject.toml'} [tool.autotrace]"
    assert where in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_install_keywords_do_not_hide_a_bad_file(here: Path) -> None:
    """Fail fast: the file is checked whole, even where keywords override it."""
    write(here, "autotrace.toml", "max_depth = 'deep'\n")
    message = _install_error(patterns="x", max_depth=3)
    assert str(here / "autotrace.toml") in message and "max_depth = 'deep'" in message


def test_malformed_toml_names_the_file_and_the_line(here: Path) -> None:
    write(here, "pyproject.toml", "[tool.autotrace]\npatterns = ['a'\nmax_depth = 3\n")
    message = _install_error(patterns="x")
    assert f"{here / 'pyproject.toml'} is not valid TOML" in message
    assert "line 3" in message, message
    assert "OTEL_PYTHON_AUTOTRACE_CONFIG=none" in message


def test_tool_autotrace_must_be_a_table(here: Path) -> None:
    write(here, "pyproject.toml", "[tool]\nautotrace = 1\n")
    assert "must be a table" in _install_error(patterns="x")


@pytest.mark.parametrize(("body", "fragments"), [
    ("[tool.autotrace]\npatterns = ['app']\nmax-depth = 3\n",
     ["unknown key 'max-depth'", "write max_depth"]),
    ("[tool.autotrace]\npatterns = ['app']\nmax_depth = = 3\n", ["is not valid TOML",
                                                                "line 3"]),
    ("[tool.autotrace]\npatterns = ['app']\nspans = false\n", ["spans = false turns"]),
    ("[tool.autotrace]\npatterns = ['app']\ntrace_file = ''\n", ["trace_file = '' in",
                                                                  "is empty"]),
    ("[tool.autotrace]\npatterns = ['app']\ninstrumentations = 'some'\n",
     ["instrumentations = 'some' in", "'on', 'distro', 'off'"]),
])
def test_the_command_exits_2_naming_file_and_key(tmp_path: Path, body: str,
                                                 fragments: list[str]) -> None:
    write(tmp_path, "pyproject.toml", body)
    (tmp_path / "deep").mkdir()
    out = run([*AUTOTRACE, sys.executable, "-c", "print('ran')"], tmp_path / "deep")
    assert out.returncode == 2, out.stderr
    assert "ran" not in out.stdout
    assert str(tmp_path / "pyproject.toml") in out.stderr, out.stderr
    for fragment in fragments:
        assert fragment in out.stderr, out.stderr


def test_the_command_takes_its_patterns_from_the_file(tmp_path: Path) -> None:
    write(tmp_path, "autotrace.toml", 'patterns = ["app"]\n')
    write(tmp_path, "app.py", "def main():\n    return 1\n\nmain()\n")
    out = run([*AUTOTRACE, sys.executable, "app.py"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "main() -> 1" in out.stderr
    (tmp_path / "autotrace.toml").unlink()
    out = run([*AUTOTRACE, sys.executable, "app.py"], tmp_path)
    assert out.returncode == 2
    assert "[tool.autotrace]" in out.stderr  # the usage error names the file too


def test_file_variables_skip_what_a_variable_gives(here: Path) -> None:
    write(here, "autotrace.toml", "patterns = ['a']\nmax_depth = 3\nexclude = ['b']\n")
    env = {"OTEL_PYTHON_AUTOTRACE_MAX_DEPTH": "4", "OTEL_PYTHON_AUTOTRACE_EXCLUDE": ""}
    assert file_variables(env) == {OPTIONS_BY_NAME["patterns"].env: "a"}


# -- opentelemetry-instrument ------------------------------------------------------------

OTEL_INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"
JOB = """\
import autotrace.core as core
def step():
    return 1
step()
i = core.active_installation()
print(json.dumps([list(i.config.patterns), i.config.max_depth]) if i else "none")
"""


@pytest.mark.skipif(not OTEL_INSTRUMENT.exists(), reason="opentelemetry-instrument not installed")
def test_opentelemetry_instrument_reads_the_file(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.distro")
    write(tmp_path, "pyproject.toml", '[tool.autotrace]\npatterns = ["job"]\nmax_depth = 3\n')
    write(tmp_path, "job.py", "import json\n" + JOB)
    env = clean_env(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none",
                    OTEL_LOGS_EXPORTER="none")
    out = run([str(OTEL_INSTRUMENT), sys.executable, "job.py"], tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == [["job"], 3]
    # its flag sets the variable, which wins over the file
    out = run([str(OTEL_INSTRUMENT), "--autotrace_max_depth", "4", sys.executable, "job.py"],
              tmp_path, env=env)
    assert json.loads(out.stdout.splitlines()[-1]) == [["job"], 4]
    # a bad file is logged, and the program runs untraced
    write(tmp_path, "pyproject.toml", '[tool.autotrace]\npatterns = ["job"]\nmax_depth = 0\n')
    out = run([str(OTEL_INSTRUMENT), sys.executable, "job.py"], tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "none"
    assert "max_depth = 0 in" in out.stderr and "too small" in out.stderr
