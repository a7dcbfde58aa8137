"""README and the documentation site are held to the options table (``config.OPTIONS``):
every option documented, nothing documented that does not exist, README a front door."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import shlex
import sys
from pathlib import Path
from types import ModuleType

import autotrace
from autotrace import configfile
from autotrace.config import OPTIONS
from autotrace.zerocode import tracefile
from autotrace.zerocode.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
_ROW = re.compile(r"^\| `(?P<name>\w+)`[^|]* \| (?P<env>[^|]+) \| (?P<flag>[^|]+) \|", re.M)
#: Variables that are not options (the trace file's runtime; where the config file is).
OTHER_VARIABLES = {tracefile.ENV_MAX_SPANS, tracefile.ENV_ROOT_PID, configfile.ENV_CONFIG}
#: Flags the pages name to say that they do not exist (command-only options).
NOT_OFFERED = {"--autotrace_trace_file"}


def _options_extension() -> ModuleType:
    """docs/_ext/autotrace_options.py, the Sphinx extension that writes the options page
    (importable without Sphinx)."""
    path = DOCS / "_ext" / "autotrace_options.py"
    spec = importlib.util.spec_from_file_location("autotrace_options", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_options_page_is_generated_from_every_option() -> None:
    """Every option has its row on the site, with its variable and flags; nothing else."""
    extension = _options_extension()
    table = extension.options_markdown()
    rows = {m["name"]: (m["env"].strip(), m["flag"].strip()) for m in _ROW.finditer(table)}
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
        assert option.help.replace("|", "\\|") in table, option.name
    assert {option.parse.__name__ for option in OPTIONS} <= set(extension.TYPES)
    assert "```{autotrace-options}\n```" in (DOCS / "options.md").read_text()


def _documents() -> list[tuple[Path, str]]:
    return [(README, README.read_text(encoding="utf-8"))] + [
        (page, page.read_text(encoding="utf-8")) for page in PAGES]


def _code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)


def _command_lines(text: str) -> list[str]:
    """``autotrace ...`` command lines: in bash blocks, after a ``$`` prompt in other
    blocks, and in inline code that gives flags."""
    lines = [line for language, body in _code_blocks(text) for line in body.splitlines()
             if language == "bash" or line.startswith("$ ")]
    lines += [span for span in re.findall(r"`(autotrace -[^`]*)`", text)]
    found = []
    for line in lines:
        for part in line.removeprefix("$ ").split("&&"):
            words = shlex.split(part, comments=True)
            while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
                words.pop(0)  # VAR=value before the command
            if words[:3] == ["python", "-m", "autotrace"]:
                words = ["autotrace", *words[3:]]
            if words[:1] == ["autotrace"] and words[1:2] != ["view"] and len(words) > 1:
                found.append(shlex.join(words))
    return found


def test_readme_and_docs_name_only_real_options() -> None:
    """Every variable, flag, command line and ``install()`` keyword written in README or
    a page exists (the options table is generated; what is written by hand is checked)."""
    variables = {option.env for option in OPTIONS if option.env_var} | OTHER_VARIABLES
    instrument_flags = {option.instrument_flag for option in OPTIONS
                        if option.env_var and option.otel_instrument}
    parser = build_parser()
    flags = {flag for action in parser._actions for flag in action.option_strings}
    keywords = set(inspect.signature(autotrace.install).parameters)
    assert not NOT_OFFERED & instrument_flags
    commands = calls = 0
    for path, text in _documents():
        for name in re.findall(r"OTEL_PYTHON_AUTOTRACE_[A-Z][A-Z0-9_]*", text):
            assert name in variables, f"{path.name}: {name} is not an option's variable"
        for flag in re.findall(r"--autotrace_\w+", text):
            assert flag in instrument_flags | NOT_OFFERED, f"{path.name}: {flag} is not an option"
        for command in _command_lines(text):
            words = shlex.split(command)[1:]
            if words in (["--help"], ["--version"]):
                continue
            try:
                args = parser.parse_args(words)
            except SystemExit:
                raise AssertionError(f"{path.name}: `{command}` is not a valid command") from None
            assert args.command, f"{path.name}: `{command}` runs no COMMAND"
            commands += 1
        for language, body in _code_blocks(text):
            if language != "python":
                continue
            for node in ast.walk(ast.parse(body)):
                if isinstance(node, ast.Call) and getattr(
                        node.func, "attr", getattr(node.func, "id", "")) == "install":
                    for keyword in node.keywords:
                        assert keyword.arg in keywords, f"{path.name}: install({keyword.arg}=)"
                    calls += 1
        if path == README:  # the front door's inline flags (`--min-duration 1ms`)
            for span in re.findall(r"`(--[a-z][^`\n]*)`", text):
                for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)(?![\w<])", span):
                    assert flag in flags, f"README: {flag} (in `{span}`) is not a flag"
    assert commands >= 20 and calls >= 3  # the scan found what it checks


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub and MyST (``myst_heading_anchors``) make it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_readme_is_the_front_door() -> None:
    """Under 250 lines, and every link into docs/ points at a page (and heading) that
    exists; every page is in the site's table of contents."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 250
    links = re.findall(r"\]\((docs/[^)\s]+)\)", text)
    assert len(links) >= 10
    for link in links:
        target, _, anchor = link.partition("#")
        assert (ROOT / target).is_file(), link
        if anchor:
            page = (ROOT / target).read_text(encoding="utf-8")
            headings = re.findall(r"^#{1,3} (.+)$", page, re.M)
            assert anchor in {_slug(h) for h in headings}, link
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    listed = {line.strip() for block in re.findall(r"```\{toctree\}\n(.*?)```", index, re.S)
              for line in block.splitlines() if line.strip() and not line.startswith(":")}
    assert listed == {page.stem for page in PAGES} - {"index"}
